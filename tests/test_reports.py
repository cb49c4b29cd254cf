"""reports/: the statistics against hand-computed numbers, and whole reports from studies whose
results are known in advance (a hand-made one, and small synthetic ones)."""

from __future__ import annotations

import html
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import plotly.offline
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from scipy import stats as sps

from reports import build_report
from reports.stats import (
    asha_saved_share,
    compare,
    format_interval,
    holm,
    summarize,
    t_interval,
)
from reports.synthetic import make_synthetic_study, write_study
from search_spaces import list_spaces
from study.plan import asha_rungs

ROOT = Path(__file__).resolve().parent.parent
XSS = "<script>window.__xss=1</script>"
SECTIONS = ("summary", "main", "curves", "search", "tables", "cost", "provenance")


# --- statistics --------------------------------------------------------------------------------
def test_t_interval_of_1_to_4_is_mean_plus_minus_t_times_sem():
    # mean 2.5, s = sqrt(5/3), sem = s/2 = 0.6454972..., t(0.975, df=3) = 3.182446305 (tables)
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2
    lo, hi = t_interval([1, 2, 3, 4])
    assert lo == pytest.approx(2.5 - half, abs=1e-9)
    assert hi == pytest.approx(2.5 + half, abs=1e-9)
    assert (round(lo, 4), round(hi, 4)) == (0.4457, 4.5543)


def test_single_value_has_no_interval_and_no_test():
    s = summarize([0.8])
    assert (s.n, s.mean, s.std, s.ci) == (1, 0.8, None, None)
    assert format_interval(s) == "n=1, no interval"
    diff, p, test = compare([0.8], [0.7, 0.72])
    assert diff == pytest.approx(0.09) and p is None and test == "none (n=1 vs 2)"


def test_welch_p_value_matches_the_textbook_formula_and_r():
    a, b = [1, 2, 3, 4], [3, 4, 5, 6]
    # equal variances 5/3, n=4: t = -2 / sqrt(5/6) = -2.19089, Welch df = 6 (R: p-value = 0.07099)
    diff, p, test = compare(a, b)
    assert test == "Welch t" and diff == -2.0
    assert p == pytest.approx(0.07099, abs=5e-6)
    # unequal variances: Welch-Satterthwaite by hand, scipy only for the t tail
    a, b = [1, 2, 3, 4], [2, 4, 6, 8, 10]
    va, vb = 5 / 3 / 4, 10 / 5  # var/n: var(a) = 5/3, var(b) = 10
    t = (2.5 - 6) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 4)
    assert compare(a, b)[1] == pytest.approx(2 * sps.t.sf(abs(t), df), rel=1e-12)


def test_same_seeds_give_a_paired_test():
    # matched by seed: 0.78-0.70, 0.79-0.72, 0.81-0.74 = 0.08, 0.07, 0.07: mean 0.07333,
    # sd 0.005774 -> t = 22 on 2 df; t(2 df) has cdf 1/2 + t / (2 sqrt(2 + t^2)),
    # so p = 1 - 22 / sqrt(486)
    diff, p, test = compare([0.79, 0.78, 0.81], [0.70, 0.72, 0.74], [2, 1, 3], [1, 2, 3])
    assert test == "paired t (seeds)"
    assert diff == pytest.approx(0.07333333, abs=1e-8)
    assert p == pytest.approx(1 - 22 / math.sqrt(486), rel=1e-6)


def test_holm_step_down_by_hand():
    # sorted 0.01, 0.03, 0.04 -> x3, x2, x1 = 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.01]) == pytest.approx([0.5, 0.02])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm([0.01, None, 0.04])  # an untestable comparison is not counted
    assert adjusted[1] is None and adjusted[0] == pytest.approx(0.02)
    assert adjusted[2] == pytest.approx(0.04)


def test_asha_rungs_and_savings():
    assert asha_rungs(1, 3, 50) == [1, 3, 9, 27]
    assert asha_rungs(2, 2, 16) == [2, 4, 8]
    assert asha_saved_share([1, 3, 50], 50) == pytest.approx(1 - 54 / 150)


# --- a hand-made study: shared beats vit by 7.3 points at 10% data --------------------------------
VIT_TEST = {1: 0.70, 2: 0.72, 3: 0.74}  # mean 72.0, std 2.0
SHARED_TEST = {1: 0.78, 2: 0.80, 3: 0.81}  # mean 79.67, std 1.53: 7.7 points ahead


def _trial(mode, phase, status, seed, params, acc, epochs, test=None):
    curve = np.linspace(acc / 2, acc, epochs)
    return {
        "arm_json": {"mode": mode, "data_fraction": 0.1}, "phase": phase, "status": status,
        "params": params, "seed": seed, "epochs_run": epochs, "best_val_acc": float(curve.max()),
        "final_val_acc": float(curve[-1]), "test_acc": test, "trial_seconds": 360.0 * epochs,
        "curves": {"val_acc": curve, **({"val_acc_agent": curve + 0.01} if mode != "vit" else {})},
    }  # fmt: skip


def _hand_study(url: str, name: str) -> None:
    trials = []
    for mode, tests in (("vit", VIT_TEST), ("shared", SHARED_TEST)):
        best = {"lr": 0.001, "tag": XSS}
        trials += [
            _trial(mode, "search", "COMPLETE", 0, best, tests[2], 9),
            _trial(mode, "search", "COMPLETE", 0, {"lr": 0.003, "tag": "plain"}, 0.5, 9),
            _trial(mode, "search", "PRUNED", 0, {"lr": 0.0001, "tag": "plain"}, 0.3, 1),
        ]
        trials += [
            _trial(mode, "final", "COMPLETE", s, best, t, 9, test=t) for s, t in tests.items()
        ]
    write_study(
        url, name, trials, space="data_fraction",
        config={"epochs": 9, "grace_epochs": 1, "reduction_factor": 3,
                "arm_factors": ["mode", "data_fraction"]},
        distributions={"lr": FloatDistribution(1e-4, 1e-2, log=True),
                       "tag": CategoricalDistribution([XSS, "plain"])},
        provenance={"code_version": "abc1234", "hardware": {"cpu": "test"},
                    "package_versions": {"optuna": "5.0.0"}, "command": "run_study.py " + XSS},
    )  # fmt: skip


@pytest.fixture(scope="module")
def hand_report(tmp_path_factory) -> tuple[str, Path]:
    tmp = tmp_path_factory.mktemp("hand")
    url = f"sqlite:///{tmp / 'studies.db'}"
    name = "hand" + XSS
    _hand_study(url, name)
    return url, build_report(name, url, tmp / "hand.html")


def _caption(page: str, section: str) -> str:
    m = re.search(rf'<section id="{section}">.*?<p class="caption">(.*?)</p>', page, re.S)
    assert m, f"no caption in section {section}"
    return html.unescape(m.group(1))


def test_report_has_every_section_and_plotly_js_once(hand_report):
    _, out = hand_report
    page = out.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
    assert page.count(plotly.offline.get_plotlyjs()[:200]) == 1
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)  # nothing loaded from outside
    figures = page.count('class="plotly-graph-div"')
    assert figures >= 6
    assert page.count("<script") == 1 + figures  # plotly.js, then one newPlot per figure


def test_captions_state_the_numbers(hand_report):
    page = hand_report[1].read_text()
    assert _caption(page, "main") == (
        # paired by seed: differences 8, 8, 7 points; mean 7.67, sd 0.577, t(0.975, 2) = 4.303
        "At 10% data, shared beats vit by 7.7 points, 95% CI [+6.2, +9.1], n=3; test accuracy of "
        "the final runs."
    )
    p = sps.ttest_rel(list(SHARED_TEST.values()), list(VIT_TEST.values())).pvalue
    assert _caption(page, "tables") == (
        "1 of 1 tested comparisons differ from their baseline at p < 0.05 after Holm (1 above, "
        "0 below); largest gain: mode=shared,data_fraction=0.1 over mode=vit,data_fraction=0.1, "
        f"+7.7 points (p = {p:.2g}, significant after Holm)."
    )
    # per arm 9+9+1 search + 3x9 final epochs: 92 epochs * 360 s = 9.2 h; the search trained
    # 9+9+1 of 27 epochs per arm, so ASHA saved 8/27 = 30%
    assert _caption(page, "summary").startswith(
        "12 trials (10 complete, 2 pruned) took 9.2 h of trial time; ASHA saved 30% of the "
        "search's epochs (38 of 54 epochs trained); best arm mode=shared,data_fraction=0.1 at "
        "79.7% (test, n=3)"
    )
    assert _caption(page, "curves").startswith(
        "12 of 12 trials drawn; 2 pruned trials stopped: 2 at epoch 1"
    )
    assert _caption(page, "cost").startswith("9.2 h of trial time in all;")
    assert _caption(page, "provenance").startswith("Code abc1234;")


def test_study_strings_are_escaped(hand_report):
    page = hand_report[1].read_text()
    assert XSS not in page
    assert "hand&lt;script&gt;window.__xss=1&lt;/script&gt;" in page
    assert "run_study.py &lt;script&gt;" in page  # the command in the summary and provenance


def test_markdown_and_latex_tables_beside_the_html(hand_report):
    out = hand_report[1]
    md, tex = out.with_suffix(".md").read_text(), out.with_suffix(".tex").read_text()
    # mean ± the 95% CI's half-width, the CI, then std; n in words where it is too small
    baseline = (
        "| mode=vit,data_fraction=0.1 | test | 3 | 72.0 ± 5.0 | [67.0, 77.0] | 2.0 | (baseline) |"
    )
    assert baseline in md
    assert "| mode=shared,data_fraction=0.1 | test | 3 | 79.7 ± 3.8 | [75.9, 83.5] | 1.5 |" in md
    assert "| +7.7 |" in md and "paired t (seeds)" in md
    assert r"mode=shared,data\_fraction=0.1 & test & 3 & 79.7 $\pm$ 3.8" in tex
    assert r"\begin{tabular}" in tex and r"\toprule" in tex and "&lt;" not in tex
    assert r"hand\textless{}script\textgreater{}" in tex


# --- the sections, one at a time ----------------------------------------------------------------
def test_each_section_builder_works_alone_on_the_loaded_study(hand_report):
    """`SECTIONS` is the page: each builder is a function of the loaded study, in page order."""
    from reports import sections
    from reports.load import load_study
    from reports.page import build_page
    from study.store import Store

    url, out = hand_report
    with Store.open_existing(url) as store:
        study = load_study(store, "hand" + XSS)
    built = [x for x in (build(study) for build in sections.SECTIONS) if x is not None]
    # a study with a shared/vit contrast also gets the paired effects after the results table
    assert [s.id for s in built] == [*SECTIONS[:5], "effects", *SECTIONS[5:]]
    page = out.read_text()
    for section in built:
        assert _caption(page, section.id) == section.caption
    assert sections.cost(study).caption.startswith("9.2 h of trial time in all;")
    assert study.rungs == [1, 3] and study.record.main_view == "fraction_curve"
    assert study.record.baselines == {
        "mode=vit,data_fraction=0.1": None,
        "mode=shared,data_fraction=0.1": "mode=vit,data_fraction=0.1",
    }

    def note(s):  # a new section is one function; the page only assembles
        return sections.Section("note", "8. Note", f"{len(s.arms)} arms", ("<p>plain</p>",))

    report = build_page(study, (sections.summary, note))
    assert report.captions == {"summary": built[0].caption, "note": "2 arms"}
    assert '<section id="note"><h2>8. Note</h2>' in report.html


# --- synthetic studies ---------------------------------------------------------------------------
@pytest.mark.parametrize("space", list_spaces())  # a new space is tested without editing this
def test_every_space_builds_a_full_report(tmp_path, space):
    url = f"sqlite:///{tmp_path / 's.db'}"
    make_synthetic_study(url, f"syn-{space}", n_trials=60, epochs=9, space=space, seed=1)
    page = build_report(f"syn-{space}", url, tmp_path / "r.html").read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in page
        assert _caption(page, section)[:1].isalnum()  # a real sentence, not an empty caption
    assert re.search(r"\d+ trials \(\d+ complete, \d+ pruned", _caption(page, "summary"))


def test_search_only_study_is_labelled_optimistic_and_has_no_invented_intervals(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    make_synthetic_study(url, "search-only", n_trials=36, epochs=9, final_seeds=0)
    out = build_report("search-only", url, tmp_path / "r.html")
    page = out.read_text()
    assert "optimistic (selected on validation)" in _caption(page, "main")
    assert "n=1, no interval" in out.with_suffix(".md").read_text()
    assert "none testable" in _caption(page, "tables")


def test_large_study_draws_at_most_300_curves(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    make_synthetic_study(
        url, "big", n_trials=600, epochs=9, metrics=2, arm_values={"data_fraction": (0.1, 0.25, 1)}
    )
    page = build_report("big", url, tmp_path / "r.html").read_text()
    assert _caption(page, "curves").startswith("300 of 636 trials drawn (all final runs,")


# --- command line ------------------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "reports", *args], cwd=ROOT, capture_output=True, text=True
    )


def test_cli_writes_the_report(hand_report, tmp_path):
    url, _ = hand_report
    done = _cli("--study", "hand" + XSS, "--storage", url, "--out", str(tmp_path / "x.html"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "x.html").exists() and (tmp_path / "x.md").exists()


@pytest.mark.parametrize(
    "storage, message",
    [
        (None, "no study named 'nope'"),
        ("foo://x", "unsupported database URL"),
        ("sqlite:////nonexistent/dir/studies.db", "no SQLite database at"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(hand_report, storage, message):
    done = _cli("--study", "nope", "--storage", storage or hand_report[0])
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr
    assert "Traceback" not in done.stderr


def test_arms_are_shown_in_the_order_their_space_lists_them(tmp_path):
    """The methods space lists vit and bootstrapping first: the report must not sort them away
    alphabetically (dhvt_vit, impulse_shared, ... used to come first)."""
    from reports.load import load_study
    from search_spaces import get_space
    from study.store import Store

    url = f"sqlite:///{tmp_path / 's.db'}"
    make_synthetic_study(url, "m", n_trials=24, epochs=4, space="methods", seed=1)
    with Store(url) as store:
        loaded = load_study(store, "m")
    methods = [factors["method"] for factors in loaded.arms.values()]
    declared = list(get_space("methods").arms["method"])
    assert methods == [m for m in declared if m in methods] and methods[:2] == ["vit", "shared"]


def test_the_report_names_trials_by_the_studys_trial_number(hand_report):
    """The summary's best-configuration table lists the numbers of the trials behind each arm's
    result, and hovering a learning curve names its trial by the same number (issue #17)."""
    import json

    from reports.load import load_study
    from reports.sections import learning_curves, summary
    from study.store import Store

    url, _ = hand_report
    with Store.open_existing(url) as store:
        study = load_study(store, "hand" + XSS)
    t = study.trials
    final = t[t["phase"] == "final"]
    body = summary(study).parts[0]
    for arm, g in final.groupby("arm"):
        numbers = ", ".join(str(n) for n in sorted(g["number"]))
        cells = [html.escape(arm).replace(",", ",<wbr>"), "3", numbers.replace(",", ",<wbr>")]
        assert f"<td>{cells[0]}</td>" in body and f"<td>{cells[1]}</td><td>{cells[2]}</td>" in body
    figure = learning_curves(study).parts[0]
    shown = set()
    for trace in json.loads(figure.to_json())["data"]:
        assert trace["hovertemplate"].startswith("trial %{customdata}, epoch %{x}")
        custom = trace["customdata"]
        if isinstance(custom, dict):  # plotly's base64 encoding of typed arrays
            custom = np.frombuffer(__import__("base64").b64decode(custom["bdata"]), custom["dtype"])
        shown |= {int(x) for x in custom}
    assert shown == set(t["number"].astype(int))


# --- honest figures ------------------------------------------------------------------------------
def _array(value) -> np.ndarray:
    """A trace's array as plotly serialises it (a list, or base64 of a typed array)."""
    import base64

    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), value["dtype"]).astype(float)
    return np.asarray(value, dtype=float)


def test_figures_say_what_the_numbers_are():
    """Issue #17's figures: bars from zero with the interval as asymmetric error bars; whole
    ticks for counts; parameters in their own units with no 'nan'; time in min, not 0.03 h;
    categorical levels as points; no subplot titles to overlap."""
    import json

    import pandas as pd

    from reports import figures

    def js(fig):
        return json.loads(fig.to_json())

    # 30.3% (CI 28.0-33.5) vs 25.6% (CI 25.0-27.0): bars from 0, error bars the interval's sides
    arms = pd.DataFrame({"arm": ["vit", "shared"], "mean": [0.303, 0.256], "lo": [0.28, 0.25],
                         "hi": [0.335, 0.27], "n": [3, 3]})  # fmt: skip
    bar = js(figures.best_per_arm(arms, {"vit": "#000000", "shared": "#111111"}, "acc (%)"))
    assert bar["layout"]["yaxis"]["range"][0] == 0
    error = bar["data"][0]["error_y"]
    assert error["symmetric"] is False
    assert _array(error["array"]) == pytest.approx([3.2, 1.4], abs=1e-4)  # hi - mean
    assert _array(error["arrayminus"]) == pytest.approx([2.3, 0.6], abs=1e-4)  # mean - lo
    # counts: whole-number steps only
    for largest in (1, 3, 9, 27, 50, 400):
        axis = figures.count_axis(largest)
        assert axis["dtick"] == int(axis["dtick"]) >= 1 and axis["tickformat"] == "d"
        assert largest / axis["dtick"] <= 10
    # a log-scaled, conditional parameter: labelled in its own units, "not set" for the missing
    search = pd.DataFrame({
        "arm": ["a"] * 4, "number": [0, 1, 2, 3], "final_val_acc": [0.5, 0.6, 0.7, 0.8],
        "params": [{"lr": 1e-4, "clip": 1.0}, {"lr": 1e-3}, {"lr": 3e-3, "clip": 2.0},
                   {"lr": 1e-2, "clip": 4.0}],
    })  # fmt: skip
    par = js(figures.parallel_coordinates(search, {"lr": "log", "clip": "linear"}))
    dims = {d["label"]: d for d in par["data"][0]["dimensions"]}
    assert "lr" in dims and "log10 lr" not in dims
    assert dims["lr"]["ticktext"][:3] == ["0.0001", "0.0002", "0.0005"]
    assert "nan" not in " ".join(" ".join(d.get("ticktext", [])) for d in dims.values())
    assert dims["clip"]["ticktext"][0] == "not set"
    # 2 minutes of trials: minutes, not 0.03 trial-hours
    trials = pd.DataFrame({"arm": ["a", "a"], "status": ["COMPLETE", "PRUNED"],
                           "trial_seconds": [80.0, 40.0]})  # fmt: skip
    cost = js(figures.cost_bars(trials))
    assert cost["layout"]["yaxis"]["title"]["text"] == "trial time (min)"
    assert sum(_array(t["y"])[0] for t in cost["data"]) == pytest.approx(2.0)
    # categorical levels are points; a numeric factor's levels are joined in order
    main = pd.DataFrame({"factor": ["mode", "mode", "hint", "hint"],
                         "value": ["vit", "shared", 5.0, 0.0], "mean": [0.7, 0.8, 0.75, 0.72],
                         "lo": [0.6, 0.7, 0.7, 0.7], "hi": [0.8, 0.9, 0.8, 0.74],
                         "n": [3, 3, 3, 3]})  # fmt: skip
    fx = js(figures.main_effects(main, "acc (%)"))
    assert [t["mode"] for t in fx["data"]] == ["markers", "lines+markers"]
    assert fx["data"][1]["x"] == ["0.0", "5.0"]
    assert not fx["layout"].get("annotations")  # factor names are axis titles, not subplot titles


def test_no_parameter_importance_from_a_handful_of_trials(hand_report):
    """The hand-made study has 2 completed search trials per arm: too few for PED-ANOVA, so the
    report says so instead of showing a ranking."""
    from reports.load import load_study
    from reports.sections import MIN_IMPORTANCE_TRIALS, search_diagnostics
    from study.store import Store

    with Store.open_existing(hand_report[0]) as store:
        section = search_diagnostics(load_study(store, "hand" + XSS))
    assert section.caption.startswith(
        f"No parameter importance for 2 of 2 arm(s) (PED-ANOVA needs {MIN_IMPORTANCE_TRIALS} "
        "completed trials"
    )
    assert not any(
        getattr(p, "layout", None) is not None and "importance" in (p.layout.title.text or "")
        for p in section.parts
    )
