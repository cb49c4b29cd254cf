"""Schema migrations for bootstudy's tables, run from code (no alembic.ini).

`upgrade(engine)` brings the database to the newest revision and does nothing when it is there
already. Two processes may call it at once: on SQLite the migration transaction takes the write lock
first (``BEGIN IMMEDIATE``), on PostgreSQL a transaction-scoped advisory lock; the second process
waits, then finds the schema current. Our revision is kept in ``bootstudy_alembic_version`` so it
never meets Optuna's ``alembic_version`` in the same database.

A new migration is a new file in ``versions/`` whose ``down_revision`` is the current head.
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Engine

__all__ = ["VERSION_TABLE", "upgrade", "current_revision", "head_revision"]

VERSION_TABLE = "bootstudy_alembic_version"  # Optuna owns "alembic_version" in the same database
_POSTGRES_LOCK_KEY = 0x62_6F_6F_74  # "boot": pg_advisory_xact_lock key serializing migrations
_IN_PROCESS_LOCK = threading.Lock()  # alembic's `context` proxy is module state: one at a time


@functools.cache
def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(Path(__file__).parent))
    return config


@functools.cache
def head_revision() -> str:
    """The newest revision this code knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "study/migrations/versions holds no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None before the first migration."""
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
        return context.get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate our tables in `engine`'s database to `revision`, in one transaction."""
    from study.engine import BEGIN_IMMEDIATE

    if revision == "head" and current_revision(engine) == head_revision():
        return  # the common case takes no write lock
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with _IN_PROCESS_LOCK, engine.connect() as connection:
        connection.execution_options(**{BEGIN_IMMEDIATE: True})
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # A migration that rebuilds a table (SQLite cannot alter a constraint) drops the old
            # one; with foreign keys on, that DROP would cascade into the rows referring to it.
            # The pragma only works outside a transaction, so it goes to the raw connection.
            connection.connection.dbapi_connection.execute("PRAGMA foreign_keys = OFF")
        try:
            _upgrade(connection, revision)
        finally:
            if sqlite:
                connection.connection.dbapi_connection.execute("PRAGMA foreign_keys = ON")


def _upgrade(connection, revision: str) -> None:
    from study.engine import StorageError

    with connection.begin():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_POSTGRES_LOCK_KEY})")
        config = _config()
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, revision)
        except CommandError as exc:
            raise StorageError(
                f"cannot migrate the bootstudy tables: {exc} (was the database written by a "
                "newer bootstudy?)"
            ) from None
        finally:
            config.attributes.pop("connection", None)
