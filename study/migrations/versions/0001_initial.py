"""Initial tables: bootstudy_studies, bootstudy_trials, bootstudy_trial_metrics.

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

_WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "bootstudy_studies",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("space", sa.String(64), nullable=False),
        sa.Column("dataset", sa.String(64), nullable=False),
        sa.Column("preset", sa.String(16), nullable=False),
        sa.Column("command", sa.Text, nullable=False),
        sa.Column("config_json", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", _WHEN, nullable=False),
        sa.Column("finished_at", _WHEN, nullable=True),
        sa.Column("code_version", sa.String(64), nullable=False),
        sa.Column("package_versions", sa.Text, nullable=False),
        sa.Column("hardware", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_bootstudy_studies"),
        sa.UniqueConstraint("name", name="uq_bootstudy_studies_name"),
        sa.CheckConstraint(
            "status IN ('RUNNING', 'FINISHED', 'FAILED', 'INTERRUPTED')",
            name="ck_bootstudy_studies_status",
        ),
    )
    op.create_table(
        "bootstudy_trials",
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
        sa.Column("started_at", _WHEN, nullable=False),
        sa.Column("finished_at", _WHEN, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_bootstudy_trials"),
        sa.UniqueConstraint("study_id", "number", name="uq_bootstudy_trials_study_id_number"),
        sa.CheckConstraint(
            "status IN ('RUNNING', 'COMPLETE', 'PRUNED', 'FAILED', 'REUSED')",
            name="ck_bootstudy_trials_status",
        ),
        sa.CheckConstraint("phase IN ('search', 'final')", name="ck_bootstudy_trials_phase"),
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
    )
    op.create_index("ix_bootstudy_trials_config_hash", "bootstudy_trials", ["config_hash"])
    op.create_index(
        "ix_bootstudy_trials_study_id_status", "bootstudy_trials", ["study_id", "status"]
    )
    op.create_table(
        "bootstudy_trial_metrics",
        sa.Column("trial_id", sa.Integer, nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Double, nullable=True),
        sa.PrimaryKeyConstraint("trial_id", "epoch", "name", name="pk_bootstudy_trial_metrics"),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["bootstudy_trials.id"],
            name="fk_bootstudy_trial_metrics_trial_id_bootstudy_trials",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("bootstudy_trial_metrics")
    op.drop_index("ix_bootstudy_trials_study_id_status", table_name="bootstudy_trials")
    op.drop_index("ix_bootstudy_trials_config_hash", table_name="bootstudy_trials")
    op.drop_table("bootstudy_trials")
    op.drop_table("bootstudy_studies")
