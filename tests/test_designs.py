"""Designed ablations: which arms OFAT and factorial designs make, the base they start from, and
that the replicates of different arms are paired (same seeds, same images, same batch order)."""

from __future__ import annotations

import io
import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import study_config

from search_spaces import get_space
from search_spaces.designs import factorial, ofat
from study.base import load_base
from study.plan import StudyConfig
from study.runner import run_study
from study.store import Store
from study.testing import curve_trainer
from trainers.augment import batch_indices
from trainers.config import TrainConfig
from trainers.splits import class_balanced_indices, train_val_split

# in-process studies share one Ray (conftest.shared_ray)
pytestmark = pytest.mark.usefixtures("shared_ray")

REPO = Path(__file__).resolve().parents[1]
FACTORS = {"mode": ("vit", "shared", "joint"), "hint": (0.0, 5.0), "hint_decay": ("linear", "none")}


def test_factorial_yields_the_product():
    cells = factorial(FACTORS)
    assert len(cells) == 3 * 2 * 2
    assert {tuple(c.values()) for c in cells} == set(itertools.product(*FACTORS.values()))


def test_ofat_yields_one_arm_per_factor_value_plus_the_base():
    base = {"mode": "shared", "hint": 5.0, "hint_decay": "linear"}
    cells = ofat(FACTORS, base)
    assert cells[0] == base
    assert len(cells) == 1 + sum(len(v) - 1 for v in FACTORS.values())  # 1 + 2 + 1 + 1
    assert len({json.dumps(c, sort_keys=True) for c in cells}) == len(cells)
    for factor, values in FACTORS.items():
        varied = [c for c in cells[1:] if c[factor] != base[factor]]
        assert sorted(map(str, (c[factor] for c in varied))) == sorted(
            str(v) for v in values if v != base[factor]
        )
        for cell in varied:  # everything else stays at the base
            assert {k: v for k, v in cell.items() if k != factor} == {
                k: v for k, v in base.items() if k != factor
            }


def test_ofat_base_value_given_as_an_int_is_the_same_cell():
    cells = ofat({"hint": (0.0, 5.0, 10.0)}, {"hint": 5})
    assert [c["hint"] for c in cells] == [5, 0.0, 10.0]


def _config(tmp_path: Path, **changes) -> StudyConfig:
    return study_config(
        tmp_path, db="d.db", **{"space": "scale", "name": "d", "concurrency": 2, **changes}
    )


def test_study_arms_follow_the_design(tmp_path):
    factorial_arms = _config(tmp_path, preset="gpu").arms()
    assert len(factorial_arms) == 3 * 4 * 2
    base = {"preset": "mid", "data_fraction": 0.1, "mode": "shared", "lr": 5e-4}
    arms = _config(tmp_path, preset="gpu", design="ofat", base=base).arms()
    assert arms[0].factors == {"preset": "mid", "data_fraction": 0.1, "mode": "shared"}
    assert len(arms) == 1 + 2 + 3 + 1
    table4 = get_space("paper_table4")
    arms = _config(tmp_path, space="paper_table4", preset="cpu").arms()
    assert [a.factors for a in arms] == list(table4.cells)
    ofat_arms = _config(tmp_path, space="paper_table4", preset="cpu", design="ofat").arms()
    assert ofat_arms[0].factors == table4.base and len(ofat_arms) == 1 + 5


def test_the_base_reaches_every_trial_but_not_the_studys_own_fields(tmp_path):
    base = {"lr": 4e-4, "seed": 7, "epochs": 99, "mode": "shared", "hint": 2.5}
    config = _config(tmp_path, space="optimizer", design="ofat", base=base)
    assert config.searchless
    configs = [
        config.search_space.trial_config(
            config.preset, arm, {}, config.trainer_base(), config.trial_overrides(arm)
        )
        for arm in config.arms()
    ]
    assert [c.mode for c in configs] == ["shared", "vit"]
    assert [(c.lr, c.epochs) for c in configs] == [(4e-4, config.epochs)] * 2
    # the shared base's hint weight stays with the modes that use it (vit would refuse it)
    assert [c.hint for c in configs] == [2.5, TrainConfig().hint]


def test_replicates_of_different_arms_are_paired(tmp_path):
    """Every arm runs the same seeds; a seed fixes the images and the batch order."""
    config = _config(tmp_path, final_seeds=3)
    summary = run_study(config, command="test", train_fn=curve_trainer, out=io.StringIO())
    trials = Store.open(config.storage).trials_frame("d")
    assert set(trials["phase"]) == {"final"}  # nothing to search: final runs only
    seeds = {arm: sorted(g["seed"]) for arm, g in trials.groupby("arm")}
    assert len(seeds) == 2 and len({tuple(s) for s in seeds.values()}) == 1
    assert sorted(seeds.values())[0] == [1000, 1001, 1002]
    assert all(b["final_n"] == 3 for b in summary.best.values())
    store = Store.open(config.storage)
    configs = [TrainConfig.from_dict(store.get_trial(int(i)).config) for i in trials["id"]]
    by_seed: dict[int, list[TrainConfig]] = {}
    for cfg in configs:
        by_seed.setdefault(cfg.seed, []).append(cfg)
    labels = torch.arange(1000) % 10
    for pair in by_seed.values():
        assert {c.mode for c in pair} == {"vit", "shared"}
        orders = []
        for cfg in pair:
            train_idx, _ = train_val_split(labels, cfg.val_fraction, cfg.split_seed)
            keep = class_balanced_indices(labels[train_idx], cfg.data_fraction, cfg.split_seed)
            generator = torch.Generator().manual_seed(cfg.seed)
            batches = batch_indices(len(keep), cfg.batch_size, generator, shuffle=True)
            orders.append([train_idx[keep][b].tolist() for b in batches])
        assert orders[0] == orders[1]


def test_searchless_study_needs_final_seeds(tmp_path):
    with pytest.raises(ValueError, match="--final-seeds must be >= 1"):
        _config(tmp_path, final_seeds=0)


def test_load_base_reads_json_files_trainer_lines_and_stored_trials(tmp_path):
    (tmp_path / "b.json").write_text(json.dumps({"config": {"lr": 3e-4}, "result": {}}))
    assert load_base(str(tmp_path / "b.json"), "sqlite://") == {"lr": 3e-4}
    assert load_base('{"hint": 2.5}', "sqlite://") == {"hint": 2.5}
    config = _config(tmp_path, final_seeds=1)
    run_study(config, command="t", train_fn=curve_trainer, out=io.StringIO())
    stored = load_base("d:0", config.storage)
    assert stored["seed"] == 1000 and math.isclose(stored["data_fraction"], 0.02)


@pytest.mark.parametrize(
    "base, message",
    [
        ("nope", "neither a JSON file"),
        ("{bad", "not valid JSON"),
        ('{"not_a_field": 1}', "unknown TrainConfig fields: not_a_field"),
    ],
)
def test_bad_base_is_one_line_exit_2(tmp_path, base, message):
    run = subprocess.run(
        [sys.executable, "run_study.py", "--space", "optimizer", "--preset", "smoke",
         "--design", "ofat", "--base", base, "--dry-run",
         "--storage", f"sqlite:///{tmp_path}/x.db"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2
    assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1
