"""The shape of the Optuna tables the store reads in bulk (Optuna's RDB schema, v3+).

Optuna owns these tables and writes them through its own API (`study.arm_search`). The store reads
them set-based for reports (``optuna.load_study(...).trials_dataframe()`` takes seconds per
thousand trials) and bulk-writes them for synthetic studies; no other module touches them. Only the
columns used are declared; the contract suite checks them against Optuna's own models
(``optuna/storages/_rdb/models.py``), so an Optuna schema change fails a test, not a report.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import sqlalchemy as sa

from study.status import TrialStatus

__all__ = ["OptunaTables", "optuna_tables", "OPTUNA_STATE", "TRIAL_ID_ATTR"]

# Links an Optuna trial to our row (bootstudy_trials.id); optuna-dashboard shows it.
TRIAL_ID_ATTR = "bootstudy_trial_id"

# Our trial status -> Optuna's TrialState name, as the search leaves Optuna's trials.
OPTUNA_STATE = {
    TrialStatus.RUNNING.value: "RUNNING",
    TrialStatus.COMPLETE.value: "COMPLETE",
    TrialStatus.PRUNED.value: "PRUNED",
    TrialStatus.FAILED.value: "FAIL",
    TrialStatus.REUSED.value: "COMPLETE",  # told to Optuna with the original's value
}


@dataclass(frozen=True)
class OptunaTables:
    studies: sa.Table
    trials: sa.Table
    params: sa.Table
    values: sa.Table
    intermediate_values: sa.Table


def _enum(name: str, *values: str) -> sa.Enum:
    """One of Optuna's enum columns: a native type on PostgreSQL (values must be cast to it),
    VARCHAR on SQLite; values are the names of Optuna's Python enums."""
    return sa.Enum(*values, name=name, create_constraint=False)


def _of_a_trial(metadata: sa.MetaData, name: str, id_column: str, *columns: sa.Column) -> sa.Table:
    """One of Optuna's per-trial tables: its own integer id, the trial's id, then its values."""
    return sa.Table(
        name,
        metadata,
        sa.Column(id_column, sa.Integer, primary_key=True),
        sa.Column("trial_id", sa.Integer),
        *columns,
    )


@functools.cache
def optuna_tables() -> OptunaTables:
    """Optuna's tables, declared in their own metadata (never created or migrated by us)."""
    metadata = sa.MetaData()
    of_a_trial = functools.partial(_of_a_trial, metadata)
    return OptunaTables(
        studies=sa.Table(
            "studies",
            metadata,
            sa.Column("study_id", sa.Integer, primary_key=True),
            sa.Column("study_name", sa.String(512)),
        ),
        trials=sa.Table(
            "trials",
            metadata,
            sa.Column("trial_id", sa.Integer, primary_key=True),
            sa.Column("number", sa.Integer),
            sa.Column("study_id", sa.Integer),
            sa.Column(
                "state", _enum("trialstate", "RUNNING", "COMPLETE", "PRUNED", "FAIL", "WAITING")
            ),
            sa.Column("datetime_start", sa.DateTime),
            sa.Column("datetime_complete", sa.DateTime),
        ),
        params=of_a_trial(
            "trial_params",
            "param_id",
            sa.Column("param_name", sa.String(512)),
            sa.Column("param_value", sa.Float),  # internal repr: a categorical's index
            sa.Column("distribution_json", sa.Text),
        ),
        values=of_a_trial(
            "trial_values",
            "trial_value_id",
            sa.Column("objective", sa.Integer),
            sa.Column("value", sa.Float),
            sa.Column("value_type", _enum("trialvaluetype", "FINITE", "INF_POS", "INF_NEG")),
        ),
        intermediate_values=of_a_trial(
            "trial_intermediate_values",
            "trial_intermediate_value_id",
            sa.Column("step", sa.Integer),
            sa.Column("intermediate_value", sa.Float),
            sa.Column(
                "intermediate_value_type",
                _enum("trialintermediatevaluetype", "FINITE", "INF_POS", "INF_NEG", "NAN"),
            ),
        ),
    )
