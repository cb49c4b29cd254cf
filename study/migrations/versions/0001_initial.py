"""Initial tables: bootstudy_studies, bootstudy_trials, bootstudy_trial_metrics.

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from study.migrations.frozen_0001 import TRIAL_STATUSES, WHEN, trials_table_items

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


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
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("finished_at", WHEN, nullable=True),
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
        *trials_table_items(
            TRIAL_STATUSES, ("ck_bootstudy_trials_status", "ck_bootstudy_trials_phase")
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
