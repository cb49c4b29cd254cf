"""bootstudy's study layer: where studies and trials are stored.

`Store` writes and reads bootstudy's tables; `optuna_storage` opens Optuna's tables in the same
database; `make_engine` checks a database URL. See `study.schema` for the tables.
"""

from study.engine import StorageError, make_engine, mask_password, optuna_storage
from study.store import (
    Store,
    StudyRecord,
    TrialRecord,
    fail_stale_optuna_trials,
)

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
