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


# --- the rungs are one fact: the plan computes them, the scheduler decides there, the report draws
@pytest.mark.parametrize(
    "grace, rf, max_t", [(1, 3, 50), (2, 2, 16), (2, 1.5, 10), (1, 2.5, 20), (3, 1.7, 30)]
)
def test_the_plans_rungs_are_the_epochs_where_asha_decides_and_the_report_draws(
    tmp_path, grace, rf, max_t
):
    """A trial whose value is its epoch: the value ASHA records at each rung is the epoch at which
    it decided there. The report (built from the stored study) must draw exactly those epochs;
    it used to truncate a non-integer reduction factor (1.5 -> 1: no rungs at all)."""
    import re

    from reports import build_report
    from reports.synthetic import write_study
    from study.plan import asha_rungs
    from study.store import Store

    scheduler = PerArmASHA("val_acc", max_t, grace, rf)
    trial = _trial("a")
    scheduler.on_trial_add(None, trial)
    for epoch in range(1, max_t + 1):
        result = {"epoch": epoch, "val_acc": float(epoch)}
        if scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
            break
    (bracket,) = scheduler.arms["a"]._brackets
    decided = sorted(
        int(recorded[trial.trial_id])
        for _, recorded in bracket._rungs
        if recorded.get(trial.trial_id, max_t) < max_t  # at max_t the trial completes anyway
    )
    assert decided == asha_rungs(grace, rf, max_t)

    url = f"sqlite:///{tmp_path / 's.db'}"
    curve = [0.5 + 0.01 * e for e in range(max_t)]
    trials = [
        {
            "arm_json": {"mode": mode, "data_fraction": 0.1}, "phase": "search",
            "status": "COMPLETE", "params": {"lr": 1e-3, "weight_decay": 0.05}, "seed": 0,
            "final_val_acc": curve[-1], "trial_seconds": 60.0, "curves": {"val_acc": curve},
        }
        for mode in ("vit", "shared")
    ]  # fmt: skip
    config = {"epochs": max_t, "grace_epochs": grace, "reduction_factor": rf}
    write_study(url, "rungs", trials, config=config)
    with Store(url) as store:
        assert store.get_study("rungs").rungs == decided
    page = build_report("rungs", url, tmp_path / "r.html").read_text()
    drawn = re.search(r"ASHA rungs at epochs ([\d, ]+) \(", page)
    assert drawn and [int(e) for e in drawn.group(1).split(", ")] == decided
