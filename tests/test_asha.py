"""Per-arm ASHA on hand-made learning curves: exact stop decisions, never across arms.

Driven like Optuna's pruner tests: real scheduler objects (Ray's ASHA inside `PerArmASHA`), real Ray
`Trial` objects, hand-picked numbers, exact expected decisions.
"""

from __future__ import annotations

import pytest
from ray.tune.experiment import Trial
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from study.ray_tune import PerArmASHA

# max_t 4, grace 1, rf 2: rungs at epochs 1 and 2; cut-off = median of the rung's recorded values.
MAX_T, GRACE, RF = 4, 1, 2

# Two arms of very different difficulty (think 100% vs 1% data). Trials run one after another.
CURVES = {
    ("high", "h1"): [0.80, 0.85, 0.88, 0.90],
    ("high", "h2"): [0.82, 0.86, 0.89, 0.91],
    ("low", "l1"): [0.30, 0.35, 0.40, 0.42],
    ("low", "l2"): [0.20, 0.25, 0.30, 0.32],  # below l1 at rung 1: the only one to stop
    ("low", "l3"): [0.35, 0.40, 0.43, 0.45],  # above the median of {0.30, 0.20} at rung 1
}


def _trial(arm: str) -> Trial:
    return Trial("curve", config={"meta": {"arm": arm}}, stub=True)


def _drive(scheduler, curves=CURVES) -> dict[str, int]:
    """Feed every curve epoch by epoch; return name -> epoch at which it was stopped early."""
    stopped = {}
    for (arm, name), curve in curves.items():
        trial = _trial(arm)
        scheduler.on_trial_add(None, trial)
        for epoch, value in enumerate(curve, start=1):
            action = scheduler.on_trial_result(None, trial, {"epoch": epoch, "val_acc": value})
            if action == TrialScheduler.STOP:
                if epoch < MAX_T:
                    stopped[name] = epoch
                break
        else:
            pytest.fail(f"{name} was not stopped at max_t")
        scheduler.on_trial_complete(None, trial, {"epoch": epoch, "val_acc": value})
    return stopped


def test_per_arm_asha_stops_exactly_the_trials_below_their_own_arms_rung():
    scheduler = PerArmASHA("val_acc", MAX_T, GRACE, RF)
    assert _drive(scheduler) == {"l2": 1}
    assert sorted(scheduler.arms) == ["high", "low"]
    assert [len(ids) for ids in scheduler.stopped.values()] == [1]


def test_one_global_asha_would_kill_every_low_data_trial():
    """The failure mode per-arm rungs exist to prevent: low arms judged against high arms."""
    scheduler = AsyncHyperBandScheduler(
        time_attr="epoch",
        metric="val_acc",
        mode="max",
        max_t=MAX_T,
        grace_period=GRACE,
        reduction_factor=RF,
    )
    assert _drive(scheduler) == {"l1": 1, "l2": 1, "l3": 1}


def test_rungs_at_later_milestones_compare_within_the_arm():
    curves = {
        ("a", "a1"): [0.50, 0.60, 0.70, 0.80],
        ("a", "a2"): [0.55, 0.58, 0.60, 0.61],  # passes rung 1 (0.55 >= 0.50), fails rung 2
        ("b", "b1"): [0.10, 0.11, 0.12, 0.13],  # alone in arm b: never stopped
        ("b", "b2"): [0.12, 0.13, 0.14, 0.15],
    }
    assert _drive(PerArmASHA("val_acc", MAX_T, GRACE, RF), curves) == {"a2": 2}


def test_history_prefills_the_arms_rungs_on_resume():
    """A resumed study keeps the cut-offs its earlier trials set (only in their own arm)."""
    history = {"low": [{1: 0.30, 2: 0.35, 3: 0.40, 4: 0.42}]}
    scheduler = PerArmASHA("val_acc", MAX_T, GRACE, RF, history=history)
    curves = {
        ("low", "l2"): CURVES[("low", "l2")],
        ("high", "h_low"): [0.25, 0.5, 0.6, 0.7],  # first in its arm: no cut-off yet
    }
    assert _drive(scheduler, curves) == {"l2": 1}
