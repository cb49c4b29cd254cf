"""Reading one study for its report, through the store's query API: a few set-based queries into
pandas, never one per trial. Per-epoch metrics are read only for the trials whose curves are drawn.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from study.store import Store, StudyRecord

__all__ = ["StudyRecord", "open_store", "load_trials", "load_curves", "load_optuna_trials"]

# Columns of bootstudy_trials the report uses; config_json and result_json stay in the database.
TRIAL_COLUMNS = (
    "id", "arm", "arm_json", "number", "optuna_study_name", "optuna_trial_id", "phase", "status",
    "params_json", "config_hash", "seed", "epochs_run", "best_val_acc", "final_val_acc",
    "test_acc", "test_acc_agent", "trial_seconds", "error", "reused_from", "started_at",
    "finished_at",
)  # fmt: skip
CURVE_METRICS = ("val_acc", "val_acc_agent")  # what the learning curves draw


def open_store(url: str) -> Store:
    """The bootstudy store at `url`, for reading: never creates a database (`StorageError`)."""
    return Store.open_existing(url)


def load_trials(store: Store, study_name: str) -> pd.DataFrame:
    """All trials of a study, one row each, `factors` and `params` as dicts."""
    trials = store.trials_frame(study_name, TRIAL_COLUMNS, parsed=True)
    return trials.rename(columns={"arm_factors": "factors"})


def load_curves(store: Store, study_name: str, trial_ids: Iterable[int]) -> pd.DataFrame:
    """Per-epoch `CURVE_METRICS` of the given trials: columns trial_id, epoch, name, value."""
    return store.metrics_frame(study_name, trial_ids=list(trial_ids), names=CURVE_METRICS)


def load_optuna_trials(store: Store, study_names: Iterable[str]) -> pd.DataFrame:
    """The arms' Optuna trials (see `Store.optuna_trials_frame`)."""
    return store.optuna_trials_frame(study_names)
