"""Database URLs and engines: the one place that knows SQLite from PostgreSQL.

Two backends are supported, and both hold Optuna's tables and ours side by side:

- ``sqlite:///runs/study.db`` (a file; relative paths are relative to the working directory).
  Every connection runs in WAL mode with a 30 s busy timeout, so optuna-dashboard can read while a
  study writes (optuna-dashboard issue #545) and Ray workers never see "database is locked".
- ``postgresql://user@host:5432/db`` (driven by psycopg 3; ``postgresql+psycopg://`` is the same).

Anything wrong with a URL is a `StorageError` with one line saying what and where::

    >>> make_engine("foo://x")
    Traceback (most recent call last):
    ...
    study.engine.StorageError: unsupported database URL 'foo://x': use sqlite:///path/to/file.db or
    postgresql://user@host:5432/database
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError

from trainers.errors import BootstudyError
from trainers.home import runs_dir

if TYPE_CHECKING:
    import optuna

__all__ = [
    "RECONNECT_SECONDS",
    "connection_lost",
    "reconnecting",
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "POSTGRES_CONNECT_TIMEOUT_SECONDS",
    "StorageError",
    "normalize_url",
    "mask_password",
    "make_engine",
    "optuna_storage",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_SECONDS = 30  # a writer waits this long for another writer, then fails
POSTGRES_CONNECT_TIMEOUT_SECONDS = 5  # an unreachable server fails fast instead of hanging
SCHEMA_RACE_SECONDS = 60  # how long a driver retries Optuna's table creation racing another one
# How long an operation is retried while PostgreSQL connections are being lost (a failover, a
# restart, pg_terminate_backend, a NAT dropping idle sockets): long enough for a failover.
# BOOTSTUDY_RECONNECT_SECONDS sets it; past it the driver stops the study in one line.
RECONNECT_SECONDS = float(os.environ.get("BOOTSTUDY_RECONNECT_SECONDS") or 60)
# A lost connection, by SQLSTATE: class 08 (connection exception), or the server ending sessions
# (57P01 admin_shutdown, 57P02 crash_shutdown, 57P03 cannot_connect_now); and by libpq's words,
# for the losses that come without a state.
_LOST_STATES = ("57P01", "57P02", "57P03")
_LOST_WORDS = (
    "server closed the connection",
    "terminating connection",
    "connection refused",
    "consuming input failed",
    "the connection is closed",
    "connection is lost",
    "could not receive data",
    "ssl connection has been closed",
)
BEGIN_IMMEDIATE = "bootstudy_begin_immediate"  # execution option: take SQLite's write lock first

_URL_HINT = "use sqlite:///path/to/file.db or postgresql://user@host:5432/database"


class StorageError(BootstudyError):
    """The study database cannot be used as asked: bad URL, unreachable server, missing study..."""


def normalize_url(url: str) -> URL:
    """Parse `url` and pin the driver: SQLite's built-in one, or psycopg 3 for PostgreSQL."""
    try:
        parsed = sa.make_url(url)
    except ArgumentError:
        raise StorageError(f"cannot parse database URL {url!r}: {_URL_HINT}") from None
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if parsed.database in (None, "", ":memory:") or "mode=memory" in str(parsed.query):
            raise StorageError(
                f"an in-memory SQLite database ({mask_password(url)}) cannot be shared with Ray "
                "workers or optuna-dashboard: give a file, e.g. sqlite:///runs/study.db"
            )
        return parsed.set(drivername="sqlite")
    raise StorageError(f"unsupported database URL {mask_password(url)!r}: {_URL_HINT}")


def mask_password(url: str | URL) -> str:
    """`url` as text with any password replaced by ``***``, for logs and error messages."""
    if isinstance(url, URL):
        return url.render_as_string(hide_password=True)
    try:
        parsed = sa.make_url(url)
    except ArgumentError:
        return url.split("@")[-1] if "@" in url else url  # drop any credentials we can't parse
    return mask_password(parsed)


def make_engine(url: str) -> Engine:
    """A SQLAlchemy engine for `url`, checked by connecting once (errors are `StorageError`).

    SQLite: the file's directory must exist and be writable, except under ``runs/`` where it is
    created; WAL, ``busy_timeout`` and foreign keys are set on every connection.
    PostgreSQL: ``pool_pre_ping`` and a 5 s connect timeout.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        _check_sqlite_path(Path(parsed.database))
        engine = sa.create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
        event.listen(engine, "connect", _on_sqlite_connect)
        event.listen(engine, "begin", _on_sqlite_begin)
    else:
        engine = sa.create_engine(
            parsed,
            pool_pre_ping=True,  # a server restart between epochs must not fail the next write
            connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS},
        )
    _probe(engine, parsed)
    return engine


def optuna_storage(url: str) -> optuna.storages.RDBStorage:
    """Optuna's RDB storage on the same database, with the same SQLite settings as ours.

    WAL is a property of the database file, so connecting once through `make_engine` switches it on
    for Optuna's connections too; ``timeout`` gives them the same busy timeout.
    """
    import optuna

    parsed = normalize_url(url)
    make_engine(url).dispose()  # validates, creates runs/ if needed, and turns WAL on
    if parsed.get_backend_name() == "sqlite":
        engine_kwargs: dict[str, Any] = {"connect_args": {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}}
    else:
        engine_kwargs = {
            "pool_pre_ping": True,
            "connect_args": {"connect_timeout": POSTGRES_CONNECT_TIMEOUT_SECONDS},
        }
    rendered = parsed.render_as_string(hide_password=False)
    deadline = time.monotonic() + SCHEMA_RACE_SECONDS
    delay = 0.05
    while True:
        try:
            storage = optuna.storages.RDBStorage(rendered, engine_kwargs=engine_kwargs)
            break
        except (DBAPIError, optuna.exceptions.StorageInternalError) as exc:
            # Optuna creates its tables, its version row and its alembic stamp without a lock:
            # drivers opening one fresh database at once collide ("table studies already exists",
            # a duplicate stamp). Each step is idempotent, so the loser retries and finds them.
            race = isinstance(exc, DBAPIError) and _schema_race(exc)
            if not (race or connection_lost(exc)) or time.monotonic() > deadline:
                raise StorageError(
                    f"cannot open Optuna's tables at {mask_password(parsed)}: {_one_line(exc)}"
                ) from None
            time.sleep(delay)
            delay = min(1.0, delay * 2)
    if parsed.get_backend_name() == "sqlite":
        event.listen(storage.engine, "connect", _on_optuna_sqlite_connect)
    return storage


def connection_lost(exc: BaseException | None) -> bool:
    """Whether `exc`, or an error it was raised from, is a lost PostgreSQL connection.

    Follows explicit causes (`raise ... from err`; Optuna wraps SQLAlchemy's errors that way), so
    a `raise ... from None` says "do not retry this" (a loss during COMMIT: the write may have
    landed). SQLite has no connections to lose: never true for it.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, sa.exc.PendingRollbackError):  # a session whose connection was lost
            return True
        if isinstance(exc, DBAPIError):
            if exc.connection_invalidated:
                return True
            state = getattr(exc.orig, "sqlstate", None) or ""
            if state.startswith("08") or state in _LOST_STATES:
                return True
            if any(words in str(exc.orig).lower() for words in _LOST_WORDS):
                return True
        exc = (
            exc.__cause__
            if exc.__cause__ is not None or exc.__suppress_context__
            else (exc.__context__)
        )
    return False


def reconnecting(
    fn: Callable[..., T],
    *args: Any,
    done_if: tuple = (),
    only_if: Callable[[BaseException], bool] = connection_lost,
    **kwargs: Any,
) -> T:
    """`fn(*args, **kwargs)`, run again with backoff (for up to RECONNECT_SECONDS) while it fails
    on a lost connection. Safe for what a lost connection rolls back: a transaction that never
    reached COMMIT. `done_if`: exceptions that, on a second try, mean the first one had landed
    (Optuna's "trial already finished" after a tell whose answer was lost)."""
    deadline = time.monotonic() + RECONNECT_SECONDS
    delay, tries = 0.1, 0
    while True:
        try:
            return fn(*args, **kwargs)
        except done_if:
            if tries == 0:
                raise
            return None  # type: ignore[return-value]
        except Exception as exc:
            if not only_if(exc) or time.monotonic() > deadline:
                raise
            tries += 1
            log.warning("database connection lost (%s); retrying", _first_line(exc))
            time.sleep(delay)
            delay = min(2.0, delay * 2)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _schema_race(exc: DBAPIError) -> bool:
    """Whether `exc` is another process creating the same tables or rows at the same moment."""
    message = _one_line(exc).lower()
    return isinstance(exc, IntegrityError) or any(
        text in message for text in ("already exists", "locked", "duplicate key")
    )


def _check_sqlite_path(path: Path) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    where = f"cannot write the SQLite database at {path}"
    # the runs directory (trainers.home) and a relative runs/ are ours: created on first use
    ours = (runs_dir().resolve(), Path("runs").resolve())
    if not directory.exists() and any(directory.resolve().is_relative_to(r) for r in ours):
        directory.mkdir(parents=True, exist_ok=True)
    if not directory.exists():
        raise StorageError(f"{where}: directory {directory} does not exist")
    if not directory.is_dir():
        raise StorageError(f"{where}: {directory} is not a directory")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise StorageError(f"{where}: directory {directory} is not writable")
    if path.exists() and (path.is_dir() or not os.access(path, os.R_OK | os.W_OK)):
        raise StorageError(f"{where}: it is a directory or not readable and writable")


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    # SQLAlchemy emits BEGIN itself (see _on_sqlite_begin): sqlite3's legacy mode would not
    # begin before a SELECT or DDL, so migrations would not be atomic.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
    _set_wal(cursor)
    cursor.execute("PRAGMA synchronous = NORMAL")  # WAL-safe; skips an fsync per commit
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.close()


def _on_sqlite_begin(connection: sa.Connection) -> None:
    # A write transaction takes the write lock up front: upgrading a read lock later fails with
    # SQLITE_BUSY at once when another writer got in between, and busy_timeout cannot help.
    if connection.get_execution_options().get(BEGIN_IMMEDIATE):
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")


def _on_optuna_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_SECONDS * 1000}")
    # As for our own connections: in WAL mode NORMAL is crash-safe and saves an fsync per commit.
    cursor.execute("PRAGMA synchronous = NORMAL")
    _set_wal(cursor)
    cursor.close()


def _set_wal(cursor: sqlite3.Cursor) -> None:
    """Switch to WAL (readers never block the writer, nor it them), retrying while it is busy.

    Two processes creating the same new file race to switch its journal mode, and SQLite reports
    the loser busy at once, without waiting out busy_timeout.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_SECONDS
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def _probe(engine: Engine, url: URL) -> None:
    try:
        reconnecting(_select_1, engine, only_if=_ended_by_server)
    except DBAPIError as exc:
        engine.dispose()
        message = _one_line(exc)
        if url.get_backend_name() == "sqlite":
            raise StorageError(
                f"cannot write the SQLite database at {url.database}: {message}"
            ) from None
        hint = ""
        if "does not exist" in message and url.database:
            hint = f" (create it with: createdb -h {url.host or 'localhost'} {url.database})"
        raise StorageError(
            f"cannot connect to PostgreSQL at {mask_password(url)}: {message}{hint}"
        ) from None


def _select_1(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.exec_driver_sql("SELECT 1")


def _ended_by_server(exc: BaseException) -> bool:
    """A lost connection (`connection_lost`) other than a refused one: worth another try when
    opening (an admin or a failover ended it). A wrong port must fail at once."""
    return connection_lost(exc) and "connection refused" not in _one_line(exc).lower()


def _one_line(exc: BaseException) -> str:
    """The driver's message without SQLAlchemy's SQL echo and background link, on one line."""
    orig = getattr(exc, "orig", None) or exc.__cause__
    text = str(getattr(orig, "orig", orig) if orig is not None else exc)
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())
