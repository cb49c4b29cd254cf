"""Derived facts on the study row: ASHA rungs, each arm's baseline arm, the report's main view.

Studies written before this revision get them computed from what they stored, by the rules the code
of that time used (so their reports read as before, except that rungs are now the epochs at which
the scheduler really decided, also for a non-integer reduction factor).

Revision ID: 0002_study_facts
Revises: 0001_initial
"""

from __future__ import annotations

import json
import math

import sqlalchemy as sa
from alembic import op

revision = "0002_study_facts"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bootstudy_studies") as batch:
        batch.add_column(sa.Column("rungs_json", sa.Text, nullable=False, server_default="[]"))
        batch.add_column(sa.Column("baselines_json", sa.Text, nullable=False, server_default="{}"))
        batch.add_column(
            sa.Column("main_view", sa.String(32), nullable=False, server_default="arms")
        )
    connection = op.get_bind()
    studies = sa.table(
        "bootstudy_studies",
        sa.column("id", sa.Integer),
        sa.column("space", sa.String),
        sa.column("config_json", sa.Text),
        sa.column("rungs_json", sa.Text),
        sa.column("baselines_json", sa.Text),
        sa.column("main_view", sa.String),
    )
    trials = sa.table(
        "bootstudy_trials",
        sa.column("study_id", sa.Integer),
        sa.column("arm", sa.String),
        sa.column("arm_json", sa.Text),
    )
    rows = connection.execute(sa.select(studies.c.id, studies.c.space, studies.c.config_json))
    for study_id, space, config_json in rows.all():
        config = _loads(config_json)
        arms: dict[str, dict] = {}
        query = sa.select(trials.c.arm, trials.c.arm_json).where(trials.c.study_id == study_id)
        for arm, arm_json in connection.execute(query.distinct()):
            arms.setdefault(arm, _loads(arm_json))
        connection.execute(
            sa.update(studies)
            .where(studies.c.id == study_id)
            .values(
                rungs_json=json.dumps(_rungs(config)),
                baselines_json=json.dumps(_baselines(arms, config.get("baseline_arm"))),
                main_view="fraction_curve" if space == "data_fraction" else "arms",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("bootstudy_studies") as batch:
        batch.drop_column("main_view")
        batch.drop_column("baselines_json")
        batch.drop_column("rungs_json")


def _loads(text: str | None) -> dict:
    try:
        value = json.loads(text) if text else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _rungs(config: dict) -> list[int]:
    """The plan's rule as of this revision: the first epoch >= grace x rf^k, below max epochs."""
    grace, rf, epochs = (config.get(k) for k in ("grace_epochs", "reduction_factor", "epochs"))
    if not grace or not rf or not epochs or rf <= 1:
        return []
    out, t = set(), float(grace)
    while t < epochs:
        out.add(math.ceil(t - 1e-9))
        t *= rf
    return sorted(out)


def _baselines(arms: dict[str, dict], configured: str | None) -> dict[str, str | None]:
    """The old report's rule: the same factors with mode=vit, else the configured baseline arm."""
    out: dict[str, str | None] = {}
    for arm, factors in arms.items():
        twin = {**factors, "mode": "vit"} if "mode" in factors else None
        match = next((a for a, f in arms.items() if twin is not None and f == twin), None)
        if match is None and configured in arms:
            match = configured
        out[arm] = None if match == arm else match
    return out
