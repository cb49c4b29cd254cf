"""Running a study and keeping its record: the plan, the search, Ray, and the store.

Lives here: `StudyConfig` and the facts it derives once (plan.py: arms, ASHA rungs, baselines, main
view), the per-arm Optuna search (arm_search.py), the only module importing Ray (ray_tune.py) and
the code it ships to the workers (frozen_code.py), the driver (runner.py), the statuses
(status.py), and the store: `Store` (store.py) with its tables (schema.py, migrations/), Optuna's
table shapes (optuna_schema.py) and URLs (engine.py), the only code that speaks SQL.
`optuna_storage` opens Optuna's tables in the same database.

May import: `trainers`, `search_spaces`; never `reports` (the report reads the store afterwards).
Imported by: `reports` (the store, the statuses, the plan), `run_study.py`, tests and benches.
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
}


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'study' has no attribute {name!r}")
