"""Paired differences and main effects of designed studies, and the scale report built from them."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from reports import build_report
from reports.effects import main_effects, paired_differences
from reports.stats import summarize
from reports.tables import RESULT_HEADER, result_rows
from study.plan import StudyConfig
from study.runner import run_study
from study.testing import seeded_trainer, seeded_value
from trainers.config import TrainConfig

# in-process studies share one Ray (conftest.shared_ray)
pytestmark = pytest.mark.usefixtures("shared_ray")

ARMS = {
    "t-v": {"preset": "tiny", "mode": "vit"},
    "t-s": {"preset": "tiny", "mode": "shared"},
    "m-v": {"preset": "mid", "mode": "vit"},
    "m-s": {"preset": "mid", "mode": "shared"},
}


def _results(values: dict[str, list[float]], seeds=(1000, 1001, 1002)) -> pd.DataFrame:
    rows = [
        {"arm": arm, "value": v, "seed": seed}
        for arm, vs in values.items()
        for v, seed in zip(vs, seeds, strict=False)
    ]
    return pd.DataFrame(rows)


def test_paired_difference_ci_equals_scipys_on_the_same_numbers():
    values = {
        "t-v": [0.748, 0.749, 0.746],
        "t-s": [0.712, 0.705, 0.717],
        "m-v": [0.731, 0.725, 0.729],
        "m-s": [0.744, 0.746, 0.741],
    }
    diffs = paired_differences(_results(values), ARMS, "mode", "shared", "vit")
    for preset, (t, c) in {"tiny": ("t-s", "t-v"), "mid": ("m-s", "m-v")}.items():
        d = np.subtract(values[t], values[c])
        lo, hi = sps.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=sps.sem(d))
        row = diffs[diffs["preset"] == preset].iloc[0]
        assert row["diff"] == pytest.approx(d.mean(), abs=1e-12)
        assert (row["lo"], row["hi"]) == (
            pytest.approx(lo, abs=1e-12),
            pytest.approx(hi, abs=1e-12),
        )
        assert row["n"] == 3 and row["note"] == ""


def test_unpaired_seeds_are_left_out_and_few_seeds_are_said_in_words():
    results = pd.concat(
        [
            _results({"t-v": [0.70, 0.71]}, seeds=(1, 2)),
            _results({"t-s": [0.72, 0.74]}, seeds=(2, 3)),
        ]
    )
    row = paired_differences(results, ARMS, "mode", "shared", "vit").iloc[0]
    assert row["n"] == 1 and row["diff"] == pytest.approx(0.72 - 0.71)
    assert math.isnan(row["lo"]) and row["note"] == "one seed: no interval"


def test_main_effects_are_marginal_means_with_intervals():
    values = {"t-v": [0.70, 0.72], "t-s": [0.74, 0.76], "m-v": [0.60, 0.62], "m-s": [0.64, 0.66]}
    effects = main_effects(_results(values), ARMS).set_index(["factor", "value"])
    assert effects.loc[("mode", "shared"), "mean"] == pytest.approx(
        np.mean([0.74, 0.76, 0.64, 0.66])
    )
    assert effects.loc[("preset", "tiny"), "n"] == 4
    lo, hi = sps.t.interval(0.95, 3, loc=0.73, scale=sps.sem([0.70, 0.72, 0.74, 0.76]))
    assert effects.loc[("preset", "tiny"), "lo"] == pytest.approx(lo)
    assert effects.loc[("preset", "tiny"), "hi"] == pytest.approx(hi)


def test_result_table_gives_mean_ci_n_and_says_when_seeds_are_too_few():
    summaries = {
        "a": summarize([0.70, 0.72, 0.74]),
        "b": summarize([0.70, 0.71]),
        "c": summarize([0.7]),
    }
    rows = {r[0]: dict(zip(RESULT_HEADER, r, strict=True)) for r in result_rows(summaries, {}, [])}
    half = (summaries["a"].ci[1] - summaries["a"].ci[0]) * 50
    assert rows["a"]["mean ± 95% CI (%)"] == f"72.0 ± {half:.1f}" and rows["a"]["n"] == "3"
    assert rows["a"]["replicates"] == "3 seeds"
    assert rows["b"]["replicates"] == "only 2 seeds: too few to claim an effect"
    assert rows["c"]["replicates"] == "one seed: no interval"
    assert rows["c"]["mean ± 95% CI (%)"] == "70.0"


def test_scale_report_shows_each_cells_paired_difference_with_scipys_ci(tmp_path):
    config = StudyConfig.from_dict(
        dict(
            space="scale", name="sc", preset="smoke", storage=f"sqlite:///{tmp_path}/s.db",
            results_dir=str(tmp_path), concurrency=2, final_seeds=3,
            arm_values={"preset": ["tiny", "mid"], "data_fraction": [0.02, 0.05]},
        )
    )  # fmt: skip
    run_study(config, command="t", train_fn=seeded_trainer, out=io.StringIO())
    out = build_report("sc", config.storage, tmp_path / "sc.html")
    page = out.read_text()
    md = out.with_suffix(".md").read_text()
    assert 'id="effects"' in page and '"type":"heatmap"' in page
    seeds = [1000, 1001, 1002]
    for preset in ("tiny", "mid"):
        d = np.array([
            seeded_value(TrainConfig(mode="shared", preset=preset, seed=s))
            - seeded_value(TrainConfig(mode="vit", preset=preset, seed=s))
            for s in seeds
        ])  # fmt: skip
        lo, hi = sps.t.interval(0.95, 2, loc=d.mean(), scale=sps.sem(d))
        line = f"| {preset} | 0.02 | "
        row = next(r for r in md.splitlines() if r.startswith(line))
        assert f"[{lo * 100:+.2f}, {hi * 100:+.2f}]" in row and row.rstrip().endswith("| 3 | – |")


def test_a_preset_that_cannot_show_the_papers_direction_says_so_in_the_header(tmp_path):
    from reports.synthetic import make_synthetic_study
    from search_spaces import get_space

    url = f"sqlite:///{tmp_path / 's.db'}"
    make_synthetic_study(url, "syn", n_trials=12, epochs=4, space="data_fraction", seed=1)
    out = build_report("syn", url, tmp_path / "r.html")
    caveat = get_space("data_fraction").budget("cpu").caveat
    assert "does not reproduce the paper's direction" in caveat and "--preset gpu" in caveat
    header = out.read_text().split("<nav>")[0]
    assert f'<p class="caveat">Caveat: {caveat}</p>'.replace("'", "&#x27;") in header
    assert out.with_suffix(".md").read_text().startswith(f"**Caveat:** {caveat}")
    assert get_space("data_fraction").budget("gpu").caveat == ""
