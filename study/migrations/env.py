"""Alembic environment: runs on the connection `study.migrations.upgrade` hands over."""

from __future__ import annotations

from alembic import context

from study.migrations import VERSION_TABLE
from study.schema import Base


def _ours(name: str | None, type_: str, parent_names: object) -> bool:
    # Autogenerate must not see Optuna's tables, which share the database.
    if type_ == "table":
        return name is not None and name.startswith("bootstudy_") and name != VERSION_TABLE
    return True


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through study.migrations.upgrade(engine), not alembic's CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    include_name=_ours,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite cannot ALTER most things
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
