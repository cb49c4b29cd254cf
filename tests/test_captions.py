"""Every caption says what its table says: sign, number and wording.

A grid of hand-made studies (the design the study ran x the effect shared - vit has: positive,
negative, spanning zero, one seed) is written through the store and reported; a checker reads
each section's caption and the table beside it and asserts that they agree: a "gain" is positive,
a "loss" negative, "beats" only with the interval above zero, "trails" only below it, "no claim
either way" when it spans zero or there is none, the same digits as the table, and the design
named is the one the study ran. A hypothesis test draws random per-seed results and runs the same
checker. On the code before reports/wording.py, the negative cells fail (the results caption
called a loss a "gain", the effects caption said "largest gain -4.7"), as does every non-OFAT
study ("in an OFAT design" was appended to every main-effects caption).
"""

from __future__ import annotations

import dataclasses
import html
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reports import effects, sections, stats, wording
from reports.load import LoadedStudy, load_study
from reports.synthetic import write_study
from study.store import Store

VIT = {1: 0.70, 2: 0.72, 3: 0.74}
EFFECTS = {  # shared - vit per seed
    "positive": {1: 0.050, 2: 0.060, 3: 0.070},  # 95% CI above zero
    "negative": {1: -0.050, 2: -0.047, 3: -0.044},  # below zero: shared trails vit by 4.7
    "spanning": {1: 0.030, 2: -0.020, 3: 0.010},  # holds zero: no claim either way
    "one seed": {1: -0.047},  # n=1: no interval
}
# design -> (space, the arms' factors, which cells differ from the first by a shift of shared)
DESIGNS = {
    "searched": ("data_fraction", [{"data_fraction": 0.1}]),
    "ofat": ("scale", [{"preset": "tiny", "data_fraction": 0.02}]),
    "factorial": (
        "scale",
        [{"preset": "tiny", "data_fraction": 0.02}, {"preset": "tiny", "data_fraction": 0.05}],
    ),
}
NUM = r"[+-]?\d+\.\d+"


def _final(factors: dict, seed: int, acc: float) -> dict:
    curve = list(np.linspace(acc / 2, acc, 3))
    return {
        "arm_json": factors, "phase": "final", "status": "COMPLETE", "params": {}, "seed": seed,
        "final_val_acc": acc, "test_acc": acc, "trial_seconds": 60.0,
        "curves": {"val_acc": curve},
    }  # fmt: skip


def _search(factors: dict, acc: float, lr: float) -> dict:
    curve = list(np.linspace(acc / 2, acc, 3))
    return {
        "arm_json": factors, "phase": "search", "status": "COMPLETE",
        "params": {"lr": lr, "weight_decay": 0.05}, "seed": 0, "final_val_acc": acc,
        "test_acc": None, "trial_seconds": 60.0, "curves": {"val_acc": curve},
    }  # fmt: skip


def _trials(design: str, effect: dict[int, float]) -> list[dict]:
    _, cells = DESIGNS[design]
    trials = []
    for k, cell in enumerate(cells):
        shift = 0.01 * k  # a second cell: the same effect, one point larger
        for seed, vit in VIT.items():
            if seed in effect:
                trials.append(_final({"mode": "vit", **cell}, seed, vit))
                trials.append(_final({"mode": "shared", **cell}, seed, vit + effect[seed] + shift))
        if design == "searched":
            for mode in ("vit", "shared"):
                trials += [_search({"mode": mode, **cell}, 0.6, 1e-3),
                           _search({"mode": mode, **cell}, 0.5, 3e-3)]  # fmt: skip
    if design == "ofat":  # the base cell (vit, tiny, 2%) varied one factor at a time
        for seed, vit in VIT.items():
            if seed in effect:
                trials.append(_final({"mode": "vit", "preset": "mid", "data_fraction": 0.02},
                                     seed, vit + 0.03))  # fmt: skip
                trials.append(_final({"mode": "vit", "preset": "tiny", "data_fraction": 0.05},
                                     seed, vit - 0.02))  # fmt: skip
    return trials


def _study(url: str, name: str, design: str, effect: dict[int, float]) -> LoadedStudy:
    space, _ = DESIGNS[design]
    config = {"epochs": 3, "grace_epochs": 1, "reduction_factor": 3}
    if design != "searched":
        config["design"] = design
    write_study(url, name, _trials(design, effect), space=space, config=config)
    with Store.open_existing(url) as store:
        return load_study(store, name)


# --- the checker ---------------------------------------------------------------------------------
def _table(part: str, cls: str) -> list[dict[str, str]]:
    """The rows of the HTML table of class `cls` in `part`, as {header: text}."""
    m = re.search(rf'<table class="{cls}"><thead><tr>(.*?)</tr></thead><tbody>(.*?)</tbody>', part)
    if m is None:
        return []
    header = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", m.group(1))]
    return [
        dict(zip(header, (html.unescape(c.replace("<wbr>", ""))
                          for c in re.findall(r"<td>(.*?)</td>", row)),
                 strict=True))
        for row in re.findall(r"<tr>(.*?)</tr>", m.group(2))
    ]  # fmt: skip


def _html(section: sections.Section) -> str:
    return "".join(p for p in section.parts if isinstance(p, str))


def _close(sentence: str, table: str, tol: float) -> bool:
    return abs(float(sentence) - float(table)) <= tol


def _check_words(caption: str, design: str) -> None:
    """What every caption must get right on its own: gains are positive, losses negative, verbs
    follow the interval, and only the study's own design is named."""
    for value in re.findall(rf"gain[^;]*?({NUM}) points", caption):
        assert float(value) > 0, caption
    for value in re.findall(rf"loss[^;]*?({NUM}) points", caption):
        assert float(value) < 0, caption
    claim = r" \S+ by \d+\.\d points, 95% CI \[({NUM}), ({NUM})\]"
    for lo, hi in re.findall("beats" + claim.replace("{NUM}", NUM), caption):
        assert float(lo) >= 0 < float(hi), caption
    for lo, hi in re.findall("trails" + claim.replace("{NUM}", NUM), caption):
        assert float(lo) < 0 >= float(hi), caption
    for lo, hi in re.findall(rf"95% CI \[({NUM}), ({NUM})\] spans zero", caption):
        assert float(lo) <= 0 <= float(hi), caption
    for name, phrase in wording.DESIGNS.items():
        if name != design:
            assert phrase not in caption, caption
    if design != "ofat":
        assert "OFAT" not in caption, caption


def _check_contrast(sentence: str, row: dict[str, str]) -> None:
    """One contrast sentence against its row of the paired-differences table (2 decimals there,
    1 in the sentence: they agree to within the rounding of both)."""
    diff, ci, n = row["Δ (points)"], row["95% CI"], row["n"]
    if ci == "no interval":
        m = re.search(rf"vs vit: ({NUM}) points from n=(\d+), no interval: no claim", sentence)
        assert m, (sentence, row)
        assert _close(m.group(1), diff, 0.0551) and m.group(2) == n
        return
    lo, hi = (float(x) for x in ci.strip("[]").split(", "))
    if lo > 0:
        m = re.search(rf"beats vit by (\d+\.\d) points, 95% CI \[({NUM}), ({NUM})\], n=(\d+)",
                      sentence)  # fmt: skip
    elif hi < 0:
        m = re.search(rf"trails vit by (\d+\.\d) points, 95% CI \[({NUM}), ({NUM})\], n=(\d+)",
                      sentence)  # fmt: skip
    else:
        m = re.search(
            rf"vs vit: ({NUM}) points, 95% CI \[({NUM}), ({NUM})\] spans zero: no claim either "
            r"way \(n=(\d+)\)",
            sentence,
        )
    assert m, (sentence, row)
    shown = m.group(1) if lo <= 0 <= hi else str(abs(float(m.group(1))))
    assert _close(shown, str(abs(float(diff))) if lo > 0 or hi < 0 else diff, 0.0551)
    assert _close(m.group(2), str(lo), 0.0551) and _close(m.group(3), str(hi), 0.0551)
    assert m.group(4) == n, (sentence, row)


def _check_effects(s: LoadedStudy) -> None:
    built = sections.effects(s)
    if built is None:
        return
    caption, body = built.caption, _html(built)
    _check_words(caption, s.design)
    rows = _table(body, "differences")
    if len(rows) == 1:
        _check_contrast(caption.split(";")[0], rows[0])
    elif rows:
        m = re.search(r"in (\d+) of (\d+) cells, trails it \(CI below zero\) in (\d+), no claim "
                      r"either way in (\d+)", caption)  # fmt: skip
        assert m, caption
        cis = [r["95% CI"] for r in rows]
        bounds = [tuple(float(x) for x in c.strip("[]").split(", ")) for c in cis if c[0] == "["]
        assert int(m.group(2)) == len(rows)
        assert int(m.group(1)) == sum(lo > 0 for lo, _ in bounds)
        assert int(m.group(3)) == sum(hi < 0 for _, hi in bounds)
        assert int(m.group(4)) == len(rows) - int(m.group(1)) - int(m.group(3))
        deltas = [float(r["Δ (points)"]) for r in rows]
        raw = effects.paired_differences(s.results, s.arms, "mode", "shared", "vit")["diff"] * 100
        gain = re.search(rf"largest gain ({NUM}) points", caption)
        assert (gain is not None) == (round(raw.max(), 1) > 0), caption
        if gain:
            assert _close(gain.group(1), str(max(deltas)), 0.0551)
        loss = re.search(rf"largest loss ({NUM}) points", caption)
        assert (loss is not None) == (round(raw.min(), 1) < 0), caption
        if loss:
            assert _close(loss.group(1), str(min(deltas)), 0.0551)
    main = _table(body, "main-effects")
    if main:
        assert wording.DESIGNS[s.design] in caption, caption
        for factor, high, high_mean, high_n, low, low_mean, low_n, spread in re.findall(
            rf"(\w+): (\S+) ({NUM})% \(n=(\d+)\) over (\S+) ({NUM})% \(n=(\d+)\), a spread of "
            rf"({NUM}) points",
            caption,
        ):
            levels = {r["level"]: r for r in main if r["factor"] == factor}
            means = [float(r["mean (%)"]) for r in levels.values()]
            assert levels[f"{factor}={high}"]["mean (%)"] == high_mean == f"{max(means):.1f}"
            assert levels[f"{factor}={low}"]["mean (%)"] == low_mean == f"{min(means):.1f}"
            assert levels[f"{factor}={high}"]["n"] == high_n
            assert levels[f"{factor}={low}"]["n"] == low_n
            assert _close(spread, str(float(high_mean) - float(low_mean)), 0.11)
    return rows


def _check_results(s: LoadedStudy) -> None:
    built = sections.results(s)
    caption = built.caption
    _check_words(caption, s.design)
    rows = {r["arm"]: r for r in _table(_html(built), "results") if r["Δ (points)"] != "–"}
    if not rows:
        return
    for arm, base, diff in re.findall(rf"largest gain: (\S+) over (\S+), ({NUM}) points", caption):
        assert rows[arm]["baseline"] == base and rows[arm]["Δ (points)"] == diff
        assert float(diff) > 0
        assert float(diff) == max(float(r["Δ (points)"]) for r in rows.values())
    for arm, base, diff in re.findall(rf"largest loss: (\S+) under (\S+), ({NUM}) points", caption):
        assert rows[arm]["baseline"] == base and rows[arm]["Δ (points)"] == diff
        assert float(diff) < 0
        assert float(diff) == min(float(r["Δ (points)"]) for r in rows.values())
    deltas = [float(r["Δ (points)"]) for r in rows.values()]  # what the table shows
    assert ("largest gain" in caption) == (max(deltas) > 0), caption
    assert ("largest loss" in caption) == (min(deltas) < 0), caption
    assert ("no arm is above its baseline" in caption) == (max(deltas) <= 0), caption
    tested = [c for c in s.comparisons if c.p_holm is not None]
    if tested:
        sig = sum(c.p_holm < 0.05 for c in tested)
        assert f"{sig} of {len(tested)} tested comparisons" in caption, caption


def _check_main_view(s: LoadedStudy, diff_rows: list[dict[str, str]]) -> None:
    built = sections.main_view(s)
    _check_words(built.caption, s.design)
    m = re.match(r"(?:No mode is above vit at any fraction; the closest: a|A)t ([\d.]+)% data, "
                 r"(.*?); ", built.caption)  # fmt: skip
    if m is None:
        return
    row = next(r for r in diff_rows if f"{float(r['data_fraction']) * 100:g}" == m.group(1))
    _check_contrast(m.group(2), row)


def check_study(s: LoadedStudy) -> None:
    rows = _check_effects(s) or []
    _check_results(s)
    _check_main_view(s, rows)


# --- the grid ------------------------------------------------------------------------------------
@pytest.mark.parametrize("effect", list(EFFECTS))
@pytest.mark.parametrize("design", list(DESIGNS))
def test_every_caption_agrees_with_its_table(tmp_path, design, effect):
    s = _study(f"sqlite:///{tmp_path / 's.db'}", "grid", design, EFFECTS[effect])
    assert s.design == design
    check_study(s)
    caption = sections.effects(s).caption
    verbs = {"positive": "shared beats vit", "negative": "shared trails vit",
             "spanning": "no claim either way", "one seed": "no interval: no claim"}  # fmt: skip
    if len(DESIGNS[design][1]) == 1:
        assert verbs[effect] in caption.lower(), caption
    else:  # two cells, the second one point more in shared's favour
        assert "in 2 cells" not in caption and " of 2 cells" in caption
    factors = {"searched": 1, "ofat": 3, "factorial": 2}[design]  # the factors with 2 values
    assert f"main effects of {factors} factor(s)" in caption


def test_the_issues_optimizer_study_says_shared_trails_vit(tmp_path):
    """Issue #17's example: shared lost to vit by 4.7 points in an optimizer study (searched, not
    OFAT). The old captions said "largest gain: ... -4.7 points" and "(in an OFAT design ...)"."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    trials = []
    for seed, vit in VIT.items():
        trials.append(_final({"mode": "vit"}, seed, vit))
        trials.append(_final({"mode": "shared"}, seed, vit + EFFECTS["negative"][seed]))
    for mode in ("vit", "shared"):
        trials += [_search({"mode": mode}, 0.6, 1e-3), _search({"mode": mode}, 0.5, 3e-3)]
    write_study(url, "opt", trials, space="optimizer",
                config={"epochs": 3, "grace_epochs": 1, "reduction_factor": 3})  # fmt: skip
    with Store.open_existing(url) as store:
        s = load_study(store, "opt")
    assert s.design == "searched"
    check_study(s)
    results = sections.results(s).caption
    assert "gain" not in results and "no arm is above its baseline" in results
    assert "largest loss: mode=shared under mode=vit, -4.7 points" in results
    effect = sections.effects(s).caption
    assert effect.startswith("Shared trails vit by 4.7 points, 95% CI [-5.4, -4.0], n=3"), effect
    assert "OFAT" not in effect and "searched study" in effect


# --- random studies ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> dict[str, LoadedStudy]:
    """One loaded study per design; the hypothesis test swaps in drawn results."""
    tmp = tmp_path_factory.mktemp("captions")
    return {d: _study(f"sqlite:///{tmp / f'{d}.db'}", d, d, EFFECTS["positive"]) for d in DESIGNS}


def _with_results(s: LoadedStudy, values: dict[str, list[float]]) -> LoadedStudy:
    """`s` with each arm's per-seed results replaced by `values` (seeds 1..n, test accuracies),
    and everything derived from them recomputed as load_study does."""
    rows = [
        {"arm": arm, "value": v, "seed": seed, "source": "test", "params": {}, "trial_id": 0}
        for arm, vs in values.items()
        for seed, v in enumerate(vs, start=1)
    ]
    results = pd.DataFrame(rows)
    summaries = {a: stats.summarize(results.loc[results["arm"] == a, "value"]) for a in values}
    return dataclasses.replace(
        s,
        results=results,
        summaries=summaries,
        sources=dict.fromkeys(values, "test"),
        comparisons=stats.compare_arms(results, s.record.baselines),
    )


accuracy = st.floats(0.05, 0.99, allow_nan=False).map(lambda x: round(x, 4))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data(), design=st.sampled_from(list(DESIGNS)), seeds=st.integers(1, 5))
def test_random_results_never_get_a_caption_the_table_contradicts(loaded, data, design, seeds):
    s = loaded[design]
    values = {
        arm: data.draw(st.lists(accuracy, min_size=seeds, max_size=seeds), label=arm)
        for arm in s.arms
    }
    drawn = _with_results(s, values)
    check_study(drawn)
    for _, d in effects.paired_differences(drawn.results, drawn.arms, "mode", "shared",
                                           "vit").iterrows():  # fmt: skip
        v = wording.verdict(d["lo"], d["hi"])
        assert (v is wording.Verdict.NONE) == (seeds == 1)
