"""Is a study whole? Our tables against Optuna's, trial by trial, after whatever happened to it.

`audit_study` is what the reliability suite and `bench/chaos.py` assert after every kill and fault:
no trial left RUNNING by a driver that is gone, no result recorded twice, and every trial in our
tables in the state its Optuna trial is in, with the same learning curve. `completed_results` is
the snapshot that proves no completed result was lost: take it before a fault, compare after.

    from study.audit import audit_study
    report = audit_study("sqlite:///runs/studies.db", "data_fraction-fashion_mnist-cpu")
    assert report.ok, report.problems
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from study.arm_search import TRIAL_ID_ATTR
from study.engine import optuna_storage
from study.store import Store

__all__ = ["Audit", "audit_study", "completed_results", "OPTUNA_STATE"]

# Our status -> the Optuna state its trial must be in (REUSED: as the original ended, see below).
OPTUNA_STATE = {
    "RUNNING": "RUNNING",
    "COMPLETE": "COMPLETE",
    "PRUNED": "PRUNED",
    "FAILED": "FAIL",
    "INTERRUPTED": "FAIL",
    "REUSED": "COMPLETE",
}


@dataclass(frozen=True)
class Audit:
    trials: int  # our rows
    completed: int  # COMPLETE or REUSED rows
    running: int  # our rows still RUNNING
    duplicates: list[str] = field(default_factory=list)  # results recorded more than once
    problems: list[str] = field(default_factory=list)  # disagreements with Optuna, leftovers

    @property
    def ok(self) -> bool:
        return not self.duplicates and not self.problems


def completed_results(store: Store, study_name: str) -> dict[int, tuple[Any, ...]]:
    """Every COMPLETE/REUSED trial's id -> (status, final_val_acc, test_acc, its metric rows)."""
    trials = store.trials_frame(study_name)
    metrics = store.metrics_frame(study_name)
    done = trials[trials["status"].isin(("COMPLETE", "REUSED"))]
    out = {}
    for row in done.itertuples():
        rows = metrics[metrics["trial_id"] == row.id]
        curve = tuple(
            (int(e), str(n), None if v != v else float(v))
            for e, n, v in zip(rows["epoch"], rows["name"], rows["value"], strict=True)
        )
        out[int(row.id)] = (row.status, _num(row.final_val_acc), _num(row.test_acc), curve)
    return out


def audit_study(storage_url: str, study_name: str, driver_alive: bool = False) -> Audit:
    """Check one study's tables against Optuna's; `driver_alive`: RUNNING trials are expected."""
    with Store(storage_url) as store:
        study = store.get_study(study_name)
        trials = store.trials_frame(study_name)
        metrics = store.metrics_frame(study_name)
    storage = optuna_storage(storage_url)
    try:
        return _audit(study, trials, metrics, storage, driver_alive)
    finally:
        storage.engine.dispose()


def _audit(study, trials, metrics, storage, driver_alive: bool) -> Audit:
    config = study.config
    objective = config.get("objective", "val_acc")
    duplicates, problems = [], []
    linked = trials.dropna(subset=["optuna_trial_id"])
    for optuna_id, rows in linked.groupby("optuna_trial_id"):
        if len(rows) > 1:
            duplicates.append(f"Optuna trial {optuna_id} has {len(rows)} rows")
    done = trials[trials["status"].isin(("COMPLETE", "REUSED"))]
    search = done[done["phase"] == "search"]
    for arm, n in search.groupby("arm").size().items():
        if n > config.get("trials_per_arm", n):
            duplicates.append(f"arm {arm}: {n} completed search trials for a budget of fewer")
    final = done[done["phase"] == "final"]
    for (arm, seed), n in final.groupby(["arm", "seed"]).size().items():
        if n > 1:
            duplicates.append(f"arm {arm}, seed {seed}: {n} completed final runs")
    running = int((trials["status"] == "RUNNING").sum())
    if running and not driver_alive:
        problems.append(f"{running} trial(s) RUNNING with no driver")
    if study.status == "RUNNING" and not driver_alive:
        problems.append("study RUNNING with no driver")
    by_id = {int(r.optuna_trial_id): r for r in linked.itertuples()}
    curves = metrics[metrics["name"] == objective]
    for name in (f"{study.name}/{arm}" for arm in config.get("arms", [])):
        try:
            study_id = storage.get_study_id_from_name(name)
        except KeyError:
            continue
        for frozen in storage.get_all_trials(study_id, deepcopy=False):
            problems += _compare(frozen, by_id.get(frozen._trial_id), curves, driver_alive)
    return Audit(len(trials), len(done), running, duplicates, problems)


def _compare(frozen, row, curves, driver_alive: bool) -> list[str]:
    state = frozen.state.name
    if row is None:
        # Asked of Optuna, never started (the driver died or was interrupted in between).
        if state == "FAIL" or (state == "RUNNING" and driver_alive):
            return []
        return [f"Optuna trial {frozen._trial_id} is {state} with no row of ours"]
    out = []
    expected = OPTUNA_STATE[row.status]
    if row.status == "REUSED" and state == "FAIL":
        expected = "FAIL"  # the original's value was not finite
    if state != expected:
        out.append(f"trial {row.id} is {row.status}, its Optuna trial {state}")
    if frozen.user_attrs.get(TRIAL_ID_ATTR, row.id) != row.id:
        out.append(f"Optuna trial {frozen._trial_id} links to {frozen.user_attrs[TRIAL_ID_ATTR]}")
    if row.status == "COMPLETE" and not _close(frozen.value, row.final_val_acc):
        out.append(f"trial {row.id}: value {row.final_val_acc}, Optuna {frozen.value}")
    if row.status in ("COMPLETE", "PRUNED"):
        ours = curves[curves["trial_id"] == row.id]
        curve = {int(e): float(v) for e, v in zip(ours["epoch"], ours["value"], strict=True)}
        finite = {e: v for e, v in curve.items() if math.isfinite(v)}
        if finite != frozen.intermediate_values:
            out.append(f"trial {row.id}: curve differs from Optuna's")
    return out


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is None and (b is None or b != b)
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _num(value: Any) -> float | None:
    return None if value is None or value != value else float(value)
