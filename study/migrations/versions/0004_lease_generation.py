"""Studies carry a fencing token: the generation of the lease on them.

Revision ID: 0004_lease_generation
Revises: 0003_interrupts_and_driver

``bootstudy_studies.lease_generation`` is bumped each time a driver claims the study (see
study.lease); every write of a driver checks, inside its own transaction, that the generation is
still the one it claimed, so a driver that was paused past its lease and taken over can never write
again. Studies written before this revision start at 0.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_lease_generation"
down_revision = "0003_interrupts_and_driver"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "bootstudy_studies",
        sa.Column("lease_generation", sa.Integer, nullable=False, server_default="0"),
    )


def downgrade() -> None:
    with op.batch_alter_table("bootstudy_studies") as batch:
        batch.drop_column("lease_generation")
