"""Reports rendered in headless Chromium (Debian's /usr/bin/chromium; browsers are never
downloaded): no console errors, every figure drawn, no network, injected markup shown as text and
never run. Screenshots land in runs/reports/ for a human to look at."""

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
