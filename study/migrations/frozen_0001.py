"""bootstudy_trials exactly as revision 0001_initial created it. FROZEN: never edit this module.

Migrations are snapshots of the schema at their revision, and two of them need this one:
0001_initial creates the table from it, and 0003_interrupts_and_driver rebuilds it from it on SQLite
(which cannot alter a CHECK constraint, so alembic copies the table from a full definition instead
of reflecting it). A later schema change is a new migration in ``versions/``, never an edit here:
editing this would change what an old revision builds. tests/test_storage_contract.py checks that
the migrations build exactly the models, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import sqlalchemy as sa

WHEN = sa.DateTime(timezone=True)  # every timestamp column of 0001
TRIAL_STATUSES = "status IN ('RUNNING', 'COMPLETE', 'PRUNED', 'FAILED', 'REUSED')"
TRIAL_PHASES = "phase IN ('search', 'final')"


def trials_table_items(
    status_check: str, check_names: tuple[str, str]
) -> list[sa.Column | sa.Constraint]:
    """Fresh columns and constraints of 0001's bootstudy_trials, in 0001's order (their creation
    order is the order of the CREATE TABLE): `status_check` is the status CHECK's SQL,
    `check_names` the status and phase CHECKs' names as the caller must spell them."""
    status_name, phase_name = check_names
    return [
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("study_id", sa.Integer, nullable=False),
        sa.Column("arm", sa.String(255), nullable=False),
        sa.Column("arm_json", sa.Text, nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("optuna_study_name", sa.String(255), nullable=True),
        sa.Column("optuna_trial_id", sa.Integer, nullable=True),
        sa.Column("ray_trial_id", sa.String(64), nullable=True),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("params_json", sa.Text, nullable=False),
        sa.Column("config_json", sa.Text, nullable=False),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("seed", sa.Integer, nullable=False),
        sa.Column("epochs_run", sa.Integer, nullable=False, server_default="0"),
        sa.Column("best_val_acc", sa.Double, nullable=True),
        sa.Column("final_val_acc", sa.Double, nullable=True),
        sa.Column("test_acc", sa.Double, nullable=True),
        sa.Column("test_acc_agent", sa.Double, nullable=True),
        sa.Column("result_json", sa.Text, nullable=True),
        sa.Column("trial_seconds", sa.Double, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("reused_from", sa.Integer, nullable=True),
        sa.Column("started_at", WHEN, nullable=False),
        sa.Column("finished_at", WHEN, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_bootstudy_trials"),
        sa.UniqueConstraint("study_id", "number", name="uq_bootstudy_trials_study_id_number"),
        sa.CheckConstraint(status_check, name=status_name),
        sa.CheckConstraint(TRIAL_PHASES, name=phase_name),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["bootstudy_studies.id"],
            name="fk_bootstudy_trials_study_id_bootstudy_studies",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["reused_from"],
            ["bootstudy_trials.id"],
            name="fk_bootstudy_trials_reused_from_bootstudy_trials",
        ),
    ]
