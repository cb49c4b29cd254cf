"""Trials may end INTERRUPTED; studies record their driver (host, pid, heartbeat).

Revision ID: 0003_interrupts_and_driver
Revises: 0002_study_facts

- ``bootstudy_trials.status`` admits ``INTERRUPTED``: a trial stopped by Ctrl-C/SIGTERM, which
  ``--resume`` runs again.
- ``bootstudy_studies`` gains ``driver_host``, ``driver_pid``, ``heartbeat_at``: the process running
  the study and when it last said it was alive, so a second driver refuses to take it over.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from study.migrations.frozen_0001 import TRIAL_STATUSES, WHEN, trials_table_items

revision = "0003_interrupts_and_driver"
down_revision = "0002_study_facts"
branch_labels = None
depends_on = None

# 0001 named its checks through the naming convention, which prefixed them once more: these are
# the names both backends hold (op.f: take them as they are).
_STATUS_CHECK = "ck_bootstudy_trials_ck_bootstudy_trials_status"
_PHASE_CHECK = "ck_bootstudy_trials_ck_bootstudy_trials_phase"
_OLD_STATUSES = TRIAL_STATUSES  # as 0001 made them
_NEW_STATUSES = "status IN ('RUNNING', 'COMPLETE', 'PRUNED', 'FAILED', 'REUSED', 'INTERRUPTED')"


def _trials(status_check: str) -> sa.Table:
    """bootstudy_trials as 0001 made it: SQLite rebuilds the table from this (no reflection)."""
    return sa.Table(
        "bootstudy_trials",
        sa.MetaData(),
        *trials_table_items(status_check, (op.f(_STATUS_CHECK), op.f(_PHASE_CHECK))),
        sa.Index("ix_bootstudy_trials_config_hash", "config_hash"),
        sa.Index("ix_bootstudy_trials_study_id_status", "study_id", "status"),
    )


def _set_status_check(old: str, new: str) -> None:
    # On SQLite this rebuilds the table (study.migrations.upgrade turns foreign keys off first, so
    # dropping the old table does not cascade into the metrics); PostgreSQL alters in place.
    with op.batch_alter_table("bootstudy_trials", copy_from=_trials(old)) as batch:
        batch.drop_constraint(op.f(_STATUS_CHECK), type_="check")
        batch.create_check_constraint(op.f(_STATUS_CHECK), new)


def upgrade() -> None:
    _set_status_check(_OLD_STATUSES, _NEW_STATUSES)
    op.add_column("bootstudy_studies", sa.Column("driver_host", sa.String(255), nullable=True))
    op.add_column("bootstudy_studies", sa.Column("driver_pid", sa.Integer, nullable=True))
    op.add_column("bootstudy_studies", sa.Column("heartbeat_at", WHEN, nullable=True))


def downgrade() -> None:
    op.drop_column("bootstudy_studies", "heartbeat_at")
    op.drop_column("bootstudy_studies", "driver_pid")
    op.drop_column("bootstudy_studies", "driver_host")
    op.execute("UPDATE bootstudy_trials SET status = 'FAILED' WHERE status = 'INTERRUPTED'")
    _set_status_check(_NEW_STATUSES, _OLD_STATUSES)
