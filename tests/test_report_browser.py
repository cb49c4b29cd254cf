"""Reports rendered in headless Chromium (Debian's /usr/bin/chromium; browsers are never
downloaded): no console errors, every figure drawn, no network, injected markup shown as text and
never run; at 1,400 px and at a laptop's 1,000 px no title overlaps another title or a tick label,
and no label is clipped by its figure (Playwright's bounding boxes). Screenshots land in
runs/reports/ for a human to look at."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reports import build_report
from reports.synthetic import make_synthetic_study

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
XSS = "<script>window.__xss=1</script>"

if not os.path.exists(CHROMIUM):
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing; CI installs Debian's chromium", pytrace=False)
    pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)", allow_module_level=True)

sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright


def _hand_made(url: str, name: str) -> None:
    from test_reports import _hand_study  # the study whose numbers test_reports asserts

    _hand_study(url, name)


def _synthetic(url: str, name: str) -> None:
    make_synthetic_study(url, name, n_trials=240, epochs=27, seed=3)


def _optimizer(url: str, name: str) -> None:
    """Six searched parameters (two of them conditional), long names: the widest panels."""
    make_synthetic_study(url, name, n_trials=120, epochs=9, seed=2, space="optimizer")


def _table4(url: str, name: str) -> None:
    """paper_table4's cells (five factors: the most main-effect panels), 3 seeds each."""
    import numpy as np

    from reports.synthetic import write_study
    from study.plan import StudyConfig

    arms = StudyConfig(space="paper_table4", name=name, preset="cpu").arms()
    rng = np.random.default_rng(4)
    trials = [
        {
            "arm_json": arm.factors, "phase": "final", "status": "COMPLETE", "params": {},
            "seed": seed, "test_acc": float(rng.uniform(0.6, 0.8)), "trial_seconds": 90.0,
            "curves": {"val_acc": list(rng.uniform(0.4, 0.8, 4))},
        }
        for arm in arms
        for seed in (1, 2, 3)
    ]  # fmt: skip
    write_study(url, name, trials, space="paper_table4", config={"epochs": 4})


WIDTHS = (1400, 1000)  # the report's width, and a laptop's
# Every text of a figure, by what it is: titles must not overlap one another or a tick label;
# no text may reach outside its figure. (Legends scroll: their entries are left out.)
LAYOUT_PROBLEMS = r"""() => {
  const problems = [];
  const kind = t => {
    const own = t.getAttribute('class') || '', parent = t.parentNode.getAttribute('class') || '';
    if (/^(gtitle|annotation-text)$/.test(own) || /^[xy]\d*title$/.test(own)) return 'title';
    if (/(^| )axis-title( |$)/.test(own)) return 'title';
    if (/^[xy]\d*tick$/.test(parent)) return 'tick:' + parent;
    return null;
  };
  const apart = (a, b) => a.right <= b.left + 1 || b.right <= a.left + 1 ||
                          a.bottom <= b.top + 1 || b.bottom <= a.top + 1;
  document.querySelectorAll('.plotly-graph-div').forEach((div, i) => {
    const fig = div.getBoundingClientRect();
    const name = (div.querySelector('.gtitle') || {}).textContent || `figure ${i + 1}`;
    const texts = [...div.querySelectorAll('text')]
      .filter(t => t.textContent.trim() && kind(t) && t.getBBox().width > 0)
      .map(t => ({kind: kind(t), text: t.textContent, box: t.getBoundingClientRect()}));
    for (const t of texts) {
      const b = t.box;
      if (b.left < fig.left - 1 || b.right > fig.right + 1 || b.top < fig.top - 1 ||
          b.bottom > fig.bottom + 1) problems.push(`${name}: "${t.text}" is clipped`);
    }
    for (let a = 0; a < texts.length; a++) for (let b = a + 1; b < texts.length; b++) {
      const x = texts[a], y = texts[b];
      const titles = x.kind === 'title' || y.kind === 'title';
      const sameAxis = x.kind === y.kind && x.kind.startsWith('tick');
      if ((titles || sameAxis) && !apart(x.box, y.box))
        problems.push(`${name}: "${x.text}" overlaps "${y.text}"`);
    }
  });
  const page = document.documentElement;
  if (page.scrollWidth > window.innerWidth + 1)
    problems.push(`the page is ${page.scrollWidth} px wide in a ${window.innerWidth} px window`);
  return problems;
}"""


@pytest.mark.parametrize("make, shot", [(_optimizer, "optimizer"), (_table4, "table4")])
def test_no_title_overlaps_and_no_label_is_clipped_at_either_width(tmp_path, make, shot):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    make(url, shot)
    out = build_report(shot, url, tmp_path / "report.html")
    problems = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            for width in WIDTHS:
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(out.resolve().as_uri(), wait_until="load")
                page.wait_for_function(
                    "[...document.querySelectorAll('.plotly-graph-div')]"
                    ".every(d => d.querySelector('.main-svg'))",
                    timeout=60_000,
                )
                problems[width] = page.evaluate(LAYOUT_PROBLEMS)
                shots = ROOT / "runs" / "reports"
                shots.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(shots / f"layout-{shot}-{width}.png"), full_page=True)
                page.close()
        finally:
            browser.close()
    assert problems == {width: [] for width in WIDTHS}


@pytest.mark.parametrize("make, shot", [(_synthetic, "synthetic"), (_hand_made, "hand-made")])
def test_report_renders_in_chromium(tmp_path, make, shot):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    name = f"{shot}{XSS}"
    make(url, name)
    out = build_report(name, url, tmp_path / "report.html")
    _check_in_chromium(out, name, shot)


def test_real_smoke_study_report_renders_in_chromium(smoke_study):
    """The report `run_study.py` itself wrote at the end of a real Fashion-MNIST smoke study."""
    _check_in_chromium(smoke_study["report"], smoke_study["name"], "smoke")


def _check_in_chromium(out: Path, name: str, shot: str) -> None:
    errors: list[str] = []
    external: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            def only_files(route):
                if route.request.url.startswith("file:"):
                    return route.continue_()
                external.append(route.request.url)
                return route.abort()

            page.route("**/*", only_files)
            page.goto(out.resolve().as_uri(), wait_until="load")
            page.wait_for_function(
                "[...document.querySelectorAll('.plotly-graph-div')]"
                ".every(d => d.querySelector('.main-svg'))",
                timeout=60_000,
            )
            figures = page.evaluate("document.querySelectorAll('.plotly-graph-div').length")
            drawn = page.evaluate(
                "[...document.querySelectorAll('.plotly-graph-div')]"
                ".filter(d => d.querySelector('.main-svg')).length"
            )
            xss_ran = page.evaluate("typeof window.__xss !== 'undefined'")
            heading = page.inner_text("h1")
            shown_in_figures = page.evaluate(
                "[...document.querySelectorAll('.plotly-graph-div')]"
                f".some(d => d.textContent.includes({XSS!r}))"
            )
            shots = ROOT / "runs" / "reports"
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / f"browser-{shot}.png"), full_page=True)
        finally:
            browser.close()

    assert errors == []
    assert external == []
    assert figures >= 6 and drawn == figures
    assert not xss_ran
    assert heading == f"bootstudy report: {name}"  # the markup is text in the page
    if shot == "hand-made":  # its searched parameter `tag` takes the XSS string as a value
        assert shown_in_figures
