"""bootstudy's study layer: where studies and trials are stored.

`Store` writes and reads bootstudy's tables; `optuna_storage` opens Optuna's tables in the same
database; `make_engine` checks a database URL. See `study.schema` for the tables.
"""

import importlib

__all__ = [
    "Store",
    "StudyRecord",
    "TrialRecord",
    "StorageError",
    "make_engine",
    "mask_password",
    "optuna_storage",
    "fail_stale_optuna_trials",
]

# Lazy: Ray workers import `study.ray_tune` (for the trial function) without SQLAlchemy or Optuna.
_HOMES = {
    "StorageError": "study.engine",
    "make_engine": "study.engine",
    "mask_password": "study.engine",
    "optuna_storage": "study.engine",
    "Store": "study.store",
    "StudyRecord": "study.store",
    "TrialRecord": "study.store",
    "fail_stale_optuna_trials": "study.store",
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'study' has no attribute {name!r}")
