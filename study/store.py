"""`Store`: the only module that speaks SQL (with `study.migrations`), one method per operation.

It writes and reads bootstudy's tables, and reads Optuna's in bulk (`optuna_trials_frame`; Optuna's
own API writes them, except `import_trials` for synthetic studies). Every write is one short
transaction: it lands whole or not at all, and a database error comes out
as a one-line `StorageError`. Reads return frozen dataclasses (`StudyRecord`, `TrialRecord`) or
pandas frames, never live ORM objects, so nothing outside this module holds a session.

Example::

    from study.provenance import collect
    from study.store import Store

    store = Store("sqlite:///runs/study.db")
    study = store.create_study("fraction-sweep", space="data_fraction", dataset="fashion_mnist",
                               preset="smoke", command="run_study.py --space data_fraction",
                               config={"arms": 2}, provenance=collect())
    trial_id = store.start_trial(study.id, arm="fraction=0.1", arm_factors={"fraction": 0.1},
                                 number=store.next_trial_number(study), phase="search",
                                 params={"lr": 1e-3}, config={"lr": 1e-3, "epochs": 2},
                                 config_hash="ab12...", seed=0)
    store.record_epoch(trial_id, 1, {"val_acc": 0.61, "train_loss": 1.2})
    store.finish_trial(trial_id, "COMPLETE", final_val_acc=0.61, trial_seconds=42.0)
    store.trials_frame("fraction-sweep")
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from study import migrations
from study.engine import (
    BEGIN_IMMEDIATE,
    StorageError,
    connection_lost,
    make_engine,
    mask_password,
    normalize_url,
    reconnecting,
)
from study.engine import _one_line as _db_message
from study.optuna_schema import OPTUNA_STATE, TRIAL_ID_ATTR, optuna_tables
from study.schema import (
    ARM_LENGTH,
    CODE_VERSION_LENGTH,
    DATASET_LENGTH,
    MAIN_VIEW_LENGTH,
    METRIC_NAME_LENGTH,
    NAME_LENGTH,
    PRESET_LENGTH,
    RAY_TRIAL_ID_LENGTH,
    SPACE_LENGTH,
    StudyRow,
    TrialMetricRow,
    TrialRow,
    UTCDateTime,
)
from study.status import StudyStatus, TrialStatus

if TYPE_CHECKING:
    import optuna

__all__ = [
    "STALE_ERROR",
    "TRIAL_FRAME_COLUMNS",
    "METRIC_FRAME_COLUMNS",
    "StudyRecord",
    "TrialRecord",
    "ImportedTrial",
    "DriverRecord",
    "LeaseLost",
    "Store",
]

FIRST_GENERATION = 1  # the lease generation of a study's creator; each claim adds one
STALE_ERROR = "stale: driver died"  # error of trials `mark_stale_running` fails
TRIAL_FRAME_COLUMNS = tuple(column.name for column in TrialRow.__table__.columns)
# JSON columns of bootstudy_trials and the names their decoded values take (as in TrialRecord)
TRIAL_JSON_COLUMNS = {
    "arm_json": "arm_factors",
    "params_json": "params",
    "config_json": "config",
    "result_json": "result",
}
OPTUNA_FRAME_COLUMNS = ("study_name", "trial_id", "number", "state", "value")
METRIC_FRAME_COLUMNS = ("trial_id", "epoch", "name", "value")
PROVENANCE_KEYS = (
    "code_version",
    "package_versions",
    "hardware",
)  # what study.provenance.collect gives

_studies = StudyRow.__table__
_trials = TrialRow.__table__
_metrics = TrialMetricRow.__table__


@dataclasses.dataclass(frozen=True)
class StudyRecord:
    """A row of ``bootstudy_studies``, its JSON columns decoded."""

    id: int
    name: str
    space: str
    dataset: str
    preset: str
    command: str
    config: dict[str, Any]
    status: str
    created_at: dt.datetime
    finished_at: dt.datetime | None
    code_version: str
    package_versions: dict[str, Any]
    hardware: dict[str, Any]
    rungs: list[int]  # epochs at which ASHA decides (study.plan.asha_rungs)
    baselines: dict[str, str | None]  # arm -> the arm it is compared with
    main_view: str  # the report's main figure


@dataclasses.dataclass(frozen=True)
class TrialRecord:
    """A row of ``bootstudy_trials``, its JSON columns decoded (``arm_json`` -> ``arm_factors``)."""

    id: int
    study_id: int
    arm: str
    arm_factors: dict[str, Any]
    number: int
    optuna_study_name: str | None
    optuna_trial_id: int | None
    ray_trial_id: str | None
    phase: str
    status: str
    params: dict[str, Any]
    config: dict[str, Any]
    config_hash: str
    seed: int
    epochs_run: int
    best_val_acc: float | None
    final_val_acc: float | None
    test_acc: float | None
    test_acc_agent: float | None
    result: dict[str, Any] | None
    trial_seconds: float | None
    error: str | None
    reused_from: int | None
    started_at: dt.datetime
    finished_at: dt.datetime | None


@dataclasses.dataclass(frozen=True)
class ImportedTrial:
    """A finished trial to add with `Store.import_trials`: what the driver would have recorded."""

    arm: str
    arm_factors: Mapping[str, Any]
    phase: str
    status: str  # COMPLETE, PRUNED or FAILED (REUSED/RUNNING have their own operations)
    params: Mapping[str, Any]  # searched values as the trainer got them
    config: Mapping[str, Any]
    config_hash: str
    seed: int
    started_at: dt.datetime
    finished_at: dt.datetime
    curves: Mapping[str, Sequence[float]] = dataclasses.field(default_factory=dict)  # per epoch
    final_val_acc: float | None = None
    test_acc: float | None = None
    test_acc_agent: float | None = None
    trial_seconds: float | None = None
    result: Mapping[str, Any] | None = None
    error: str | None = None
    optuna_study_name: str | None = None  # also a trial of this Optuna study (search phase)
    optuna_params: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # Optuna's labels
    distributions: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # name -> Optuna's


@dataclasses.dataclass(frozen=True)
class DriverRecord:
    """The process that runs (or ran) a study, and when it last said it was alive."""

    host: str
    pid: int
    heartbeat_at: dt.datetime
    generation: int = 0  # the lease generation (fencing token) of its claim

    def age_seconds(self) -> float:
        return (_utcnow() - self.heartbeat_at).total_seconds()


class Store:
    """bootstudy's tables in the database at `url` (SQLite file or PostgreSQL).

    Opening migrates the tables to the newest schema; that is idempotent and safe from several
    processes at once. Use as a context manager, or call `close()`, to release connections.
    """

    def __init__(self, url: str):
        self.url = mask_password(url)  # for messages: never shows a password
        self._fence: tuple[int, int] | None = None  # (study id, lease generation): see `fence`
        self.fenced_out = False  # a write found the study claimed by another driver
        self.engine = make_engine(url)
        # Writes take SQLite's write lock at BEGIN (see study.engine); ignored on PostgreSQL.
        self._write_engine = self.engine.execution_options(**{BEGIN_IMMEDIATE: True})
        try:  # one transaction per revision (DDL is transactional on PostgreSQL): safe to repeat
            reconnecting(migrations.upgrade, self.engine)
        except DBAPIError as exc:
            self.engine.dispose()
            raise StorageError(
                f"cannot create the bootstudy tables in {self.url}: {_db_message(exc)}"
            ) from None
        except BaseException:
            self.engine.dispose()
            raise
        self._check_tables()

    def _check_tables(self) -> None:
        """A `StorageError` naming the first bootstudy table or column missing (dropped or altered
        by hand: the schema revision still says current), instead of a traceback at the first
        write that needs it."""
        try:
            with self.engine.connect() as connection:
                inspector = sa.inspect(connection)
                for table in (_studies, _trials, _metrics):
                    if not inspector.has_table(table.name):
                        missing = f"table {table.name} is missing"
                        break
                    have = {column["name"] for column in inspector.get_columns(table.name)}
                    lost = [column.name for column in table.columns if column.name not in have]
                    if lost:
                        missing = f"table {table.name} lacks column {lost[0]}"
                        break
                else:
                    return
        except DBAPIError as exc:
            self.engine.dispose()
            message = _db_message(exc)
            raise StorageError(f"cannot read the tables of {self.url}: {message}") from None
        self.engine.dispose()
        raise StorageError(
            f"the bootstudy tables in {self.url} are damaged: {missing}; restore the database "
            "from a copy (its studies cannot be read or continued as it is)"
        )

    @classmethod
    def open(cls, url: str) -> Store:
        """Same as ``Store(url)``."""
        return cls(url)

    def check_integrity(self) -> None:
        """A `StorageError` if a SQLite file is damaged (PRAGMA quick_check), before a study writes
        into it; PostgreSQL keeps its own checksums and is not scanned."""
        if self.engine.dialect.name != "sqlite":
            return
        with self._reading() as session:
            problems = session.execute(sa.text("PRAGMA quick_check(3)")).scalars().all()
        if problems != ["ok"]:
            found = " ".join(" ".join(problems).split())[:200]
            raise StorageError(
                f"the SQLite database {self.url} is damaged ({found}): restore it from a copy, "
                "or give another --storage"
            )

    def close(self) -> None:
        """Close every pooled connection; the store must not be used afterwards."""
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # ---- studies -------------------------------------------------------------------------------

    def create_study(
        self,
        name: str,
        space: str,
        dataset: str,
        preset: str,
        command: str,
        config: Mapping[str, Any],
        provenance: Mapping[str, Any],
        *,
        rungs: Iterable[int] = (),
        baselines: Mapping[str, str | None] | None = None,
        main_view: str = "arms",
        driver: tuple[str, int] | None = None,
    ) -> StudyRecord:
        """Add a RUNNING study; `provenance` is `study.provenance.collect()`'s dict.

        `rungs`, `baselines` and `main_view` are the facts the study plan derives
        (`StudyConfig.facts()`); they are stored once here and read by the runner and the report.
        `driver` (host, pid) records the process running it, with a heartbeat of now, in the same
        transaction: no other driver can claim the study in between (see `claim_driver`).
        """
        _check_length("study name", name, NAME_LENGTH)
        _check_length("main view", main_view, MAIN_VIEW_LENGTH)
        _check_length("space", space, SPACE_LENGTH)
        _check_length("dataset", dataset, DATASET_LENGTH)
        _check_length("preset", preset, PRESET_LENGTH)
        unknown = sorted(set(provenance) - set(PROVENANCE_KEYS))
        if unknown:
            raise ValueError(f"unknown provenance keys {unknown}; expected {PROVENANCE_KEYS}")
        code_version = str(provenance.get("code_version", "unknown"))[-CODE_VERSION_LENGTH:]
        row = dict(
            name=name,
            space=space,
            dataset=dataset,
            preset=preset,
            command=command,
            config_json=_dumps(config),
            status=StudyStatus.RUNNING.value,
            created_at=_utcnow(),
            finished_at=None,
            code_version=code_version,
            package_versions=_dumps(provenance.get("package_versions", {})),
            hardware=_dumps(provenance.get("hardware", {})),
            rungs_json=_dumps([int(r) for r in rungs]),
            baselines_json=_dumps(dict(baselines or {})),
            main_view=main_view,
        )
        driver_row = {}
        if driver is not None:
            driver_row = dict(
                driver_host=driver[0],
                driver_pid=driver[1],
                heartbeat_at=_utcnow(),
                lease_generation=FIRST_GENERATION,
            )
        with self._writing(f"create study {name!r}") as session:
            found = session.execute(sa.select(_studies).where(_studies.c.name == name)).first()
            if found is not None and driver is not None and _same_driver(found, driver):
                # our own insert, whose COMMIT answer a lost connection swallowed: it landed
                return _study_record(found._mapping)
            if found is not None:
                raise StorageError(
                    f"study {name!r} already exists in {self.url}; use --resume or another --study"
                )
            insert = sa.insert(_studies).values({**row, **driver_row})
            study_id = session.execute(insert).inserted_primary_key[0]
        return _study_record({**row, "id": study_id})

    def get_study(self, name: str) -> StudyRecord:
        """The study called `name`; a `StorageError` naming the known studies if there is none."""
        with self._reading() as session:
            row = session.execute(sa.select(_studies).where(_studies.c.name == name)).first()
            if row is not None:
                return _study_record(row._mapping)
            known = session.scalars(sa.select(_studies.c.name).order_by(_studies.c.id)).all()
        listed = ", ".join(known[:10]) + (", ..." if len(known) > 10 else "")
        holds = f"it holds: {listed}" if known else "it holds no study yet"
        raise StorageError(f"no study named {name!r} in {self.url} ({holds})")

    def list_studies(self) -> list[StudyRecord]:
        """Every study, oldest first."""
        with self._reading() as session:
            rows = session.execute(sa.select(_studies).order_by(_studies.c.id)).all()
        return [_study_record(row._mapping) for row in rows]

    def set_study_status(self, name: str, status: StudyStatus | str, finished: bool = True) -> None:
        """Set a study's status; `finished` stamps ``finished_at`` now, otherwise clears it."""
        status = _text(status)
        values = {"status": status, "finished_at": _utcnow() if finished else None}
        with self._writing(f"set the status of study {name!r} to {status!r}") as session:
            updated = session.execute(
                sa.update(_studies).where(_studies.c.name == name).values(values)
            ).rowcount
        if updated == 0:
            self.get_study(name)  # raises the "no study named" error

    def claim_driver(
        self, name: str, host: str, pid: int, alive: Callable[[DriverRecord], bool]
    ) -> DriverRecord:
        """Make (host, pid) the study's driver unless `alive(current driver)` says it still runs.

        Returns the study's driver afterwards: (host, pid) with its new lease generation when
        claimed (one more than the last claim's: the fencing token to hand `fence`), else the live
        driver (nothing is written then). The read and the write are one transaction holding the
        study's row (SQLite's write lock, PostgreSQL's row lock), so of two drivers claiming at
        once exactly one wins.
        """
        with self._writing(f"claim study {name!r}") as session:
            row = session.execute(
                sa.select(
                    _studies.c.id,
                    _studies.c.driver_host,
                    _studies.c.driver_pid,
                    _studies.c.heartbeat_at,
                    _studies.c.lease_generation,
                )
                .where(_studies.c.name == name)
                .with_for_update()
            ).first()
            if row is None:
                raise StorageError(f"no study named {name!r} in {self.url}")
            if row.heartbeat_at is not None and (row.driver_host, row.driver_pid) != (host, pid):
                current = DriverRecord(
                    row.driver_host, row.driver_pid, row.heartbeat_at, row.lease_generation
                )
                if alive(current):
                    return current
            now, generation = _utcnow(), row.lease_generation + 1
            session.execute(
                sa.update(_studies)
                .where(_studies.c.id == row.id)
                .values(
                    driver_host=host, driver_pid=pid, heartbeat_at=now, lease_generation=generation
                )
            )
        return DriverRecord(host, pid, now, generation)

    def fence(self, study_id: int, generation: int) -> None:
        """From now on every write of this store first checks, inside its own transaction, that
        the study's lease generation is still `generation` (the fencing token `claim_driver` or
        `create_study` gave): once another driver has claimed the study, each write (ours and, via
        `fence_optuna`, Optuna's) raises `LeaseLost` and writes nothing, even the first write
        of a driver that wakes from a pause long past its lease."""
        self._fence = (study_id, generation)

    def fence_optuna(self, storage: optuna.storages.RDBStorage) -> None:
        """Fence Optuna's writes too: each transaction of `storage`'s engine checks the token
        first (on SQLite it takes the write lock at BEGIN, so the check holds to COMMIT)."""
        sqlite_db = storage.engine.dialect.name == "sqlite"

        def check(connection: sa.Connection) -> None:
            if sqlite_db:
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            self._check_fence(connection)

        sa.event.listen(storage.engine, "begin", check)

    def _check_fence(self, connection: sa.Connection | Session) -> None:
        """`LeaseLost` unless the fenced study still has our lease generation. The study's row is
        locked (PostgreSQL) or the database is (SQLite's BEGIN IMMEDIATE) until this write ends,
        so no claim can come between the check and the write."""
        if self._fence is None:
            return
        study_id, generation = self._fence
        current = connection.execute(
            sa.select(
                _studies.c.name,
                _studies.c.lease_generation,
                _studies.c.driver_host,
                _studies.c.driver_pid,
            )
            .where(_studies.c.id == study_id)
            .with_for_update()
        ).first()
        if current is None or current.lease_generation != generation:
            self.fenced_out = True
            by = ""
            if current is not None and current.driver_pid is not None:
                by = f" by host {current.driver_host}, pid {current.driver_pid}"
            name = f"{current.name!r}" if current is not None else str(study_id)
            raise LeaseLost(
                f"this driver lost study {name}: it was taken over{by} (lease generation "
                f"{generation} -> {'none' if current is None else current.lease_generation}) while "
                "this process was paused or cut off; it stops without writing, and the study "
                "goes on under its new driver"
            )

    def beat(self, study_id: int, host: str, pid: int) -> bool:
        """Renew the driver's heartbeat; False if (host, pid) is no longer the study's driver."""
        with self._writing(f"renew the heartbeat of study {study_id}") as session:
            update = _update_if_driver(study_id, host, pid).values(heartbeat_at=_utcnow())
            return session.execute(update).rowcount == 1

    def release_driver(self, study_id: int, host: str, pid: int) -> None:
        """Say (host, pid) no longer runs the study: a `--resume` may start at once."""
        with self._writing(f"release study {study_id}") as session:
            session.execute(
                _update_if_driver(study_id, host, pid).values(
                    driver_host=None, driver_pid=None, heartbeat_at=None
                )
            )

    # ---- trials --------------------------------------------------------------------------------

    def next_trial_number(self, study: StudyRecord | int) -> int:
        """One more than the highest trial number in the study; 0 for its first trial."""
        with self._reading() as session:
            return _next_number(session, _study_id(study))

    def start_trial(
        self,
        study_id: int,
        arm: str,
        arm_factors: Mapping[str, Any],
        number: int | None,
        phase: str,
        params: Mapping[str, Any],
        config: Mapping[str, Any],
        config_hash: str,
        seed: int,
        optuna_study_name: str | None = None,
        optuna_trial_id: int | None = None,
        ray_trial_id: str | None = None,
    ) -> int:
        """Add a RUNNING trial and return its id; ``number=None`` takes the next free number."""
        _check_length("arm", arm, ARM_LENGTH)
        _check_length("optuna study name", optuna_study_name, NAME_LENGTH)
        _check_length("ray trial id", ray_trial_id, RAY_TRIAL_ID_LENGTH)
        row = dict(
            study_id=study_id,
            arm=arm,
            arm_json=_dumps(arm_factors),
            optuna_study_name=optuna_study_name,
            optuna_trial_id=optuna_trial_id,
            ray_trial_id=ray_trial_id,
            phase=_text(phase),
            status=TrialStatus.RUNNING.value,
            params_json=_dumps(params),
            config_json=_dumps(config),
            config_hash=config_hash,
            seed=seed,
            epochs_run=0,
            started_at=_utcnow(),
        )
        with self._writing(f"start trial {number} of study {study_id}") as session:
            if ray_trial_id is not None and number is not None:  # a repeat after a lost COMMIT
                landed = session.scalar(  # answer finds the row that did land: same Ray trial,
                    sa.select(_trials.c.id).where(  # same number
                        _trials.c.study_id == study_id,
                        _trials.c.number == number,
                        _trials.c.ray_trial_id == ray_trial_id,
                    )
                )
                if landed is not None:
                    return landed
            row["number"] = _next_number(session, study_id) if number is None else number
            return session.execute(sa.insert(_trials).values(row)).inserted_primary_key[0]

    def record_epoch(self, trial_id: int, epoch: int, metrics: Mapping[str, float]) -> None:
        """Store one epoch's metrics; recording an epoch again overwrites its values.

        `epoch` is numbered as the trainer reports it. Afterwards the trial's ``epochs_run`` is the
        number of distinct epochs recorded and ``best_val_acc`` the largest ``val_acc`` so far.
        NaN is stored as NULL (identically on SQLite and PostgreSQL); infinities are kept.
        """
        self.record_epochs(trial_id, {epoch: metrics})

    def record_epochs(self, trial_id: int, epochs: Mapping[int, Mapping[str, float]]) -> None:
        """`record_epoch` for several epochs in one transaction (the driver batches fast trials)."""
        for epoch in epochs:
            if isinstance(epoch, bool) or not isinstance(epoch, int):
                raise TypeError(f"epoch must be an int, got {epoch!r}")
        rows = [
            {"trial_id": trial_id, "epoch": epoch, "name": name, "value": _metric(name, value)}
            for epoch, metrics in epochs.items()
            for name, value in metrics.items()
        ]
        numbers = ", ".join(map(str, epochs))
        what = f"record epoch{'s' if len(epochs) > 1 else ''} {numbers} of trial {trial_id}"
        with self._writing(what) as session:
            if rows:
                insert = self._dialect_insert(_metrics).values(rows)
                session.execute(
                    insert.on_conflict_do_update(
                        index_elements=[_metrics.c.trial_id, _metrics.c.epoch, _metrics.c.name],
                        set_={"value": insert.excluded.value},
                    )
                )
            of_trial = _metrics.c.trial_id == trial_id
            updated = session.execute(
                sa.update(_trials)
                .where(_trials.c.id == trial_id)
                .values(
                    epochs_run=sa.select(sa.func.count(sa.distinct(_metrics.c.epoch)))
                    .where(of_trial)
                    .scalar_subquery(),
                    best_val_acc=sa.select(sa.func.max(_metrics.c.value))
                    .where(of_trial, _metrics.c.name == "val_acc")
                    .scalar_subquery(),
                )
            ).rowcount
            if updated == 0:
                raise StorageError(f"could not {what}: no trial with id {trial_id}")

    def finish_trial(
        self,
        trial_id: int,
        status: TrialStatus | str,
        *,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        trial_seconds: float | None = None,
        final_val_acc: float | None = None,
        test_acc: float | None = None,
        test_acc_agent: float | None = None,
    ) -> None:
        """Close a trial as COMPLETE, PRUNED, FAILED or INTERRUPTED, with what it produced or why
        it failed."""
        status = _text(status)
        if status in (TrialStatus.RUNNING, TrialStatus.REUSED):
            raise ValueError(
                f"finish_trial takes COMPLETE, PRUNED, FAILED or INTERRUPTED, not {status!r}"
            )
        values = dict(
            status=status,
            result_json=None if result is None else _dumps(result),
            error=error,
            trial_seconds=_finite_or_none(trial_seconds),
            final_val_acc=_finite_or_none(final_val_acc),
            test_acc=_finite_or_none(test_acc),
            test_acc_agent=_finite_or_none(test_acc_agent),
            finished_at=_utcnow(),
        )
        with self._writing(f"finish trial {trial_id} as {status!r}") as session:
            updated = session.execute(
                sa.update(_trials).where(_trials.c.id == trial_id).values(values)
            ).rowcount
            if updated == 0:
                raise StorageError(f"could not finish trial {trial_id}: no trial with that id")

    def note_failed_attempts(self, trial_id: int, errors: str) -> None:
        """Keep the errors of a RUNNING trial's failed attempts (Ray retries it, --retries) in its
        ``error``; `finish_trial` is given them again with how the trial ended."""
        with self._writing(f"note the failed attempts of trial {trial_id}") as session:
            session.execute(sa.update(_trials).where(_trials.c.id == trial_id).values(error=errors))

    def mark_running_interrupted(self, study_id: int) -> list[int]:
        """End the study's RUNNING trials as INTERRUPTED (the driver stops: `--resume` runs them
        again, with every epoch they finished); return their ids."""
        with self._writing(f"interrupt the running trials of study {study_id}") as session:
            stopped = session.scalars(
                sa.update(_trials)
                .where(_trials.c.study_id == study_id, _trials.c.status == TrialStatus.RUNNING)
                .values(status=TrialStatus.INTERRUPTED.value, finished_at=_utcnow())
                .returning(_trials.c.id)
            ).all()
        return sorted(stopped)

    def mark_stale_running(self, study_id: int) -> list[int]:
        """Fail the study's trials still RUNNING (their driver died); return their ids."""
        with self._writing(f"fail the stale trials of study {study_id}") as session:
            stale = session.scalars(
                sa.update(_trials)
                .where(_trials.c.study_id == study_id, _trials.c.status == TrialStatus.RUNNING)
                .values(status=TrialStatus.FAILED.value, error=STALE_ERROR, finished_at=_utcnow())
                .returning(_trials.c.id)
            ).all()
        return sorted(stale)

    def settle_stale_optuna_trials(
        self,
        storage: optuna.storages.BaseStorage,
        study_names: Iterable[str],
        objective: str,
    ) -> dict[str, list[int]]:
        """End Optuna's RUNNING trials of these studies the way our rows say they ended.

        Optuna is told asynchronously, after our row is written, so a driver killed in between
        leaves a trial COMPLETE (or PRUNED) in our table and RUNNING in Optuna's. Our row is the
        truth: such a trial gets its missing intermediate values (`objective` by epoch) and its
        final value or state, so the sampler keeps the result. Every other RUNNING trial (ours
        FAILED as stale, or no row at all: killed between ask and start) becomes FAIL. Returns
        the Optuna trial ids by the state they were given: "COMPLETE", "PRUNED", "FAIL".
        """
        from optuna.trial import TrialState

        settled: dict[str, list[int]] = {"COMPLETE": [], "PRUNED": [], "FAIL": []}
        for name in study_names:
            running = _running_optuna_trials(storage, name)
            if not running:
                continue
            ids = [trial._trial_id for trial in running]
            with self._reading() as session:
                rows = {
                    row.optuna_trial_id: row
                    for row in session.execute(
                        sa.select(_trials.c.id, _trials.c.optuna_trial_id, _trials.c.status).where(
                            _trials.c.optuna_trial_id.in_(ids)
                        )
                    )
                }
            for trial in running:
                row = rows.get(trial._trial_id)
                status = row.status if row is not None else None
                ended = status in (TrialStatus.COMPLETE, TrialStatus.PRUNED)
                curve = self.metric_curve(row.id, objective) if ended else []  # only theirs count
                finite = [(epoch, value) for epoch, value in curve if math.isfinite(value)]
                if row is not None and TRIAL_ID_ATTR not in trial.user_attrs:
                    storage.set_trial_user_attr(trial._trial_id, TRIAL_ID_ATTR, row.id)
                for epoch, value in finite:
                    if epoch not in trial.intermediate_values:
                        storage.set_trial_intermediate_value(trial._trial_id, epoch, value)
                if status == TrialStatus.COMPLETE and finite:
                    storage.set_trial_state_values(
                        trial._trial_id, state=TrialState.COMPLETE, values=[finite[-1][1]]
                    )
                    settled["COMPLETE"].append(trial._trial_id)
                elif status == TrialStatus.PRUNED:
                    storage.set_trial_state_values(trial._trial_id, state=TrialState.PRUNED)
                    settled["PRUNED"].append(trial._trial_id)
                else:
                    storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
                    settled["FAIL"].append(trial._trial_id)
        return settled

    def get_trial(self, trial_id: int) -> TrialRecord:
        """The trial with id `trial_id`."""
        with self._reading() as session:
            row = session.execute(sa.select(_trials).where(_trials.c.id == trial_id)).first()
        if row is None:
            raise StorageError(f"no trial with id {trial_id} in {self.url}")
        return _trial_record(row._mapping)

    def find_completed_by_hash(self, config_hash: str) -> TrialRecord | None:
        """The first COMPLETE trial (of any study) that ran this exact config, if any."""
        with self._reading() as session:
            row = session.execute(
                sa.select(_trials)
                .where(
                    _trials.c.config_hash == config_hash,
                    _trials.c.status == TrialStatus.COMPLETE,
                )
                .order_by(_trials.c.id)
                .limit(1)
            ).first()
        return None if row is None else _trial_record(row._mapping)

    def record_reused(
        self,
        study_id: int,
        original: TrialRecord | int,
        arm: str,
        arm_factors: Mapping[str, Any],
        number: int | None,
        phase: str,
        params: Mapping[str, Any] | None = None,
        optuna_study_name: str | None = None,
        optuna_trial_id: int | None = None,
        ray_trial_id: str | None = None,
    ) -> int:
        """Add a REUSED trial carrying a COMPLETE trial's results and metrics; return its id.

        Config, hash, seed, results, epochs and ``trial_seconds`` are the original's (so time per
        arm stays comparable: leave REUSED rows out when summing what a study cost); ``params``
        default to the original's. ``reused_from`` points at the original.
        """
        original_id = original.id if isinstance(original, TrialRecord) else original
        _check_length("arm", arm, ARM_LENGTH)
        with self._writing(f"reuse trial {original_id} in study {study_id}") as session:
            source = session.execute(sa.select(_trials).where(_trials.c.id == original_id)).first()
            if source is None or source.status != TrialStatus.COMPLETE:
                state = "does not exist" if source is None else f"is {source.status}"
                raise StorageError(f"cannot reuse trial {original_id}: it {state}, not COMPLETE")
            now = _utcnow()
            row = {
                column: getattr(source, column)
                for column in TRIAL_FRAME_COLUMNS
                if column not in ("id", "study_id", "error")
            }
            row.update(
                study_id=study_id,
                arm=arm,
                arm_json=_dumps(arm_factors),
                number=_next_number(session, study_id) if number is None else number,
                optuna_study_name=optuna_study_name,
                optuna_trial_id=optuna_trial_id,
                ray_trial_id=ray_trial_id,
                phase=_text(phase),
                status=TrialStatus.REUSED.value,
                params_json=source.params_json if params is None else _dumps(params),
                reused_from=original_id,
                started_at=now,
                finished_at=now,
            )
            trial_id = session.execute(sa.insert(_trials).values(row)).inserted_primary_key[0]
            copied = sa.select(
                sa.literal(trial_id, sa.Integer),
                _metrics.c.epoch,
                _metrics.c.name,
                _metrics.c.value,
            ).where(_metrics.c.trial_id == original_id)
            session.execute(sa.insert(_metrics).from_select(list(METRIC_FRAME_COLUMNS), copied))
        return trial_id

    def count_trials(
        self,
        study_id: int,
        arm: str | None = None,
        statuses: Iterable[TrialStatus | str] | None = None,
    ) -> int:
        """How many trials the study has, optionally only of one arm and/or some statuses."""
        query = (
            sa.select(sa.func.count()).select_from(_trials).where(_trials.c.study_id == study_id)
        )
        if arm is not None:
            query = query.where(_trials.c.arm == arm)
        if statuses is not None:
            query = query.where(_trials.c.status.in_([_text(s) for s in statuses]))
        with self._reading() as session:
            return session.scalar(query) or 0

    def metric_curve(self, trial_id: int, name: str) -> list[tuple[int, float]]:
        """``(epoch, value)`` of one metric of one trial, by epoch; NaN where NULL was stored."""
        query = (
            sa.select(_metrics.c.epoch, _metrics.c.value)
            .where(_metrics.c.trial_id == trial_id, _metrics.c.name == name)
            .order_by(_metrics.c.epoch)
        )
        with self._reading() as session:
            rows = session.execute(query).all()
        return [(epoch, math.nan if value is None else value) for epoch, value in rows]

    def count_metrics(self, study_id: int) -> int:
        """How many (trial, epoch, metric) values the study has stored."""
        query = (
            sa.select(sa.func.count())
            .select_from(_metrics.join(_trials, _trials.c.id == _metrics.c.trial_id))
            .where(_trials.c.study_id == study_id)
        )
        with self._reading() as session:
            return session.scalar(query) or 0

    # ---- frames --------------------------------------------------------------------------------

    def trials_frame(
        self, study_name: str, columns: Iterable[str] | None = None, *, parsed: bool = False
    ) -> pd.DataFrame:
        """The study's rows of ``bootstudy_trials`` (columns `TRIAL_FRAME_COLUMNS`), by number.

        `columns` reads only those (a report of 10,000 trials leaves the configs in the database).
        `parsed` decodes the JSON columns into Python values under the names `TrialRecord` uses
        (``arm_json`` -> ``arm_factors``, ``params_json`` -> ``params``, ...).
        """
        names = list(TRIAL_FRAME_COLUMNS if columns is None else columns)
        unknown = sorted(set(names) - set(TRIAL_FRAME_COLUMNS))
        if unknown:
            raise ValueError(f"bootstudy_trials has no column {unknown}")
        query = (
            sa.select(*(_trials.c[name] for name in names))
            .join(_studies, _studies.c.id == _trials.c.study_id)
            .where(_studies.c.name == study_name)
            .order_by(_trials.c.number)
        )
        with self._reading() as session:
            rows = session.execute(query).all()
        if not rows:
            self.get_study(study_name)  # an unknown study is an error, not an empty frame
        frame = _typed(pd.DataFrame([tuple(row) for row in rows], columns=names), _trials)
        if parsed:
            for column in TRIAL_JSON_COLUMNS:
                if column in frame:
                    frame[column] = [_loads(_present(text)) for text in frame[column]]
            frame = frame.rename(columns=TRIAL_JSON_COLUMNS)
        return frame

    def metrics_frame(
        self,
        study_name: str,
        trial_ids: Iterable[int] | None = None,
        names: Iterable[str] | None = None,
    ) -> pd.DataFrame:
        """The study's per-epoch metrics in long form: trial_id, epoch, name, value (NaN: NULL).

        `trial_ids` and `names` restrict it to those trials and metrics (a report draws 300 curves
        of a 10,000-trial study).
        """
        query = (
            sa.select(*(_metrics.c[column] for column in METRIC_FRAME_COLUMNS))
            .join(_trials, _trials.c.id == _metrics.c.trial_id)
            .join(_studies, _studies.c.id == _trials.c.study_id)
            .where(_studies.c.name == study_name)
            .order_by(_metrics.c.trial_id, _metrics.c.epoch, _metrics.c.name)
        )
        if trial_ids is not None:
            query = query.where(_metrics.c.trial_id.in_([int(i) for i in trial_ids]))
        if names is not None:
            query = query.where(_metrics.c.name.in_(list(names)))
        with self._reading() as session:
            rows = session.execute(query).all()
        if not rows:
            self.get_study(study_name)
        frame = pd.DataFrame([tuple(row) for row in rows], columns=list(METRIC_FRAME_COLUMNS))
        return _typed(frame, _metrics)

    def optuna_trials_frame(self, study_names: Iterable[str]) -> pd.DataFrame:
        """Optuna's trials of the given Optuna studies, one row each, parameters as columns.

        Columns: `OPTUNA_FRAME_COLUMNS` (state as Optuna's name: COMPLETE, PRUNED, FAIL, ...;
        value the first objective's), then one column per parameter in its external form (a
        categorical's choice, not its index); ``frame.attrs["distributions"]`` maps each
        parameter to its Optuna distribution. Three set-based queries on Optuna's tables instead
        of `optuna.load_study(...).trials_dataframe()`, which takes seconds to minutes on tens of
        thousands of trials (optuna/optuna#763, #4890). Studies Optuna does not have are absent.
        """
        from optuna.distributions import json_to_distribution

        names = list(study_names)
        frame = pd.DataFrame(columns=list(OPTUNA_FRAME_COLUMNS))
        with self._reading() as session:
            if not names or not sa.inspect(session.connection()).has_table("trials"):
                return frame
            o = optuna_tables()
            of_studies = (
                sa.select(o.trials.c.trial_id)
                .join(o.studies, o.studies.c.study_id == o.trials.c.study_id)
                .where(o.studies.c.study_name.in_(names))
            )
            trials = session.execute(
                sa.select(
                    o.studies.c.study_name,
                    o.trials.c.trial_id,
                    o.trials.c.number,
                    o.trials.c.state,
                    o.values.c.value,
                )
                .join(o.trials, o.trials.c.study_id == o.studies.c.study_id)
                .outerjoin(
                    o.values,
                    (o.values.c.trial_id == o.trials.c.trial_id) & (o.values.c.objective == 0),
                )
                .where(o.studies.c.study_name.in_(names))
                .order_by(o.trials.c.trial_id)
            ).all()
            param_columns = ("trial_id", "param_name", "param_value", "distribution_json")
            params = session.execute(
                sa.select(o.params.c[param_columns]).where(o.params.c.trial_id.in_(of_studies))
            ).all()
        if not trials:
            return frame
        frame = pd.DataFrame([tuple(r) for r in trials], columns=list(OPTUNA_FRAME_COLUMNS))
        frame["state"] = [getattr(state, "name", str(state)) for state in frame["state"]]
        frame["value"] = frame["value"].astype("float64")
        if not params:
            return frame
        # Stored values are Optuna's internal representation (a categorical is its choice's index).
        distributions = {j: json_to_distribution(j) for j in {row[3] for row in params}}
        long = pd.DataFrame(
            [(t, n, distributions[j].to_external_repr(v)) for t, n, v, j in params],
            columns=["trial_id", "param_name", "value"],
        )
        wide = long.pivot(index="trial_id", columns="param_name", values="value")
        frame = frame.merge(wide, left_on="trial_id", right_index=True, how="left")
        frame.attrs["distributions"] = {n: distributions[j] for _, n, _, j in params}
        return frame

    # ---- bulk import ---------------------------------------------------------------------------

    def import_trials(
        self, study: StudyRecord | int, trials: Iterable[ImportedTrial], objective: str = "val_acc"
    ) -> list[int]:
        """Add finished trials with their per-epoch metrics in one transaction; return their ids.

        For synthetic studies (tests, benchmarks) and imports: thousands of trials in seconds,
        where `start_trial` + `record_epochs` + `finish_trial` take a transaction each. A trial
        with an ``optuna_study_name`` also becomes a trial of that Optuna study (create it first
        with Optuna's API), with its parameters, its final value when COMPLETE and its
        `objective` curve as intermediate values, exactly as `study.arm_search` would leave it.
        ``epochs_run`` and ``best_val_acc`` are derived from the curves, as `record_epochs` does.
        """
        study_id = _study_id(study)
        trials = list(trials)
        with self._writing(f"import {len(trials)} trials into study {study_id}") as session:
            number = _next_number(session, study_id)
            optuna_ids = self._import_optuna(session, trials, objective)
            rows = []
            for i, t in enumerate(trials):
                _check_length("arm", t.arm, ARM_LENGTH)
                values = t.curves.get(objective, ())
                finite = [float(v) for v in values if v is not None and not math.isnan(v)]
                rows.append(
                    dict(
                        study_id=study_id,
                        arm=t.arm,
                        arm_json=_dumps(t.arm_factors),
                        number=number + i,
                        optuna_study_name=t.optuna_study_name,
                        optuna_trial_id=optuna_ids[i],
                        ray_trial_id=None,
                        phase=_text(t.phase),
                        status=_text(t.status),
                        params_json=_dumps(t.params),
                        config_json=_dumps(t.config),
                        config_hash=t.config_hash,
                        seed=t.seed,
                        epochs_run=max((len(v) for v in t.curves.values()), default=0),
                        best_val_acc=max(finite) if objective == "val_acc" and finite else None,
                        final_val_acc=_finite_or_none(t.final_val_acc),
                        test_acc=_finite_or_none(t.test_acc),
                        test_acc_agent=_finite_or_none(t.test_acc_agent),
                        result_json=None if t.result is None else _dumps(t.result),
                        trial_seconds=_finite_or_none(t.trial_seconds),
                        error=t.error,
                        reused_from=None,
                        started_at=t.started_at,
                        finished_at=t.finished_at,
                    )
                )
            ids = _insert_returning(session, _trials, rows, _trials.c.id) if rows else []
            metric_rows = [
                {"trial_id": trial_id, "epoch": epoch, "name": name, "value": _metric(name, v)}
                for trial_id, t in zip(ids, trials, strict=True)
                for name, values in t.curves.items()
                for epoch, v in enumerate(values, start=1)
            ]
            if metric_rows:
                session.execute(sa.insert(_metrics), metric_rows)
        return ids

    def _import_optuna(
        self, session: Session, trials: list[ImportedTrial], objective: str
    ) -> list[int | None]:
        """Optuna's rows for the trials that name an Optuna study; their Optuna trial ids."""
        from optuna.distributions import distribution_to_json

        wanted = sorted({t.optuna_study_name for t in trials if t.optuna_study_name})
        if not wanted:
            return [None] * len(trials)
        o = optuna_tables()
        study_ids = dict(
            session.execute(
                sa.select(o.studies.c.study_name, o.studies.c.study_id).where(
                    o.studies.c.study_name.in_(wanted)
                )
            ).all()
        )
        missing = sorted(set(wanted) - set(study_ids))
        if missing:
            raise StorageError(f"no Optuna study named {missing[0]!r} in {self.url}")
        counts = dict(
            session.execute(
                sa.select(o.trials.c.study_id, sa.func.count())
                .where(o.trials.c.study_id.in_(list(study_ids.values())))
                .group_by(o.trials.c.study_id)
            ).all()
        )
        picked = [(i, t) for i, t in enumerate(trials) if t.optuna_study_name]
        rows = []
        for _, t in picked:
            optuna_study = study_ids[t.optuna_study_name]
            rows.append(
                dict(
                    number=counts.get(optuna_study, 0),
                    study_id=optuna_study,
                    state=OPTUNA_STATE[_text(t.status)],
                    datetime_start=_naive_utc(t.started_at),
                    datetime_complete=_naive_utc(t.finished_at),
                )
            )
            counts[optuna_study] = counts.get(optuna_study, 0) + 1
        ids = _insert_returning(session, o.trials, rows, o.trials.c.trial_id)
        params, values, intermediate = [], [], []
        for trial_id, (_, t) in zip(ids, picked, strict=True):
            for name, label in t.optuna_params.items():
                distribution = t.distributions[name]
                params.append(
                    dict(
                        trial_id=trial_id,
                        param_name=name,
                        param_value=distribution.to_internal_repr(label),
                        distribution_json=distribution_to_json(distribution),
                    )
                )
            if t.status == TrialStatus.COMPLETE and _finite_or_none(t.final_val_acc) is not None:
                values.append(
                    dict(trial_id=trial_id, objective=0, value=t.final_val_acc, value_type="FINITE")
                )
            intermediate += [
                dict(
                    trial_id=trial_id,
                    step=step,
                    intermediate_value=float(v),
                    intermediate_value_type="FINITE",
                )
                for step, v in enumerate(t.curves.get(objective, ()), start=1)
                if v is not None and math.isfinite(v)
            ]
        for table, table_rows in (
            (o.params, params),
            (o.values, values),
            (o.intermediate_values, intermediate),
        ):
            if table_rows:
                session.execute(sa.insert(table), table_rows)
        out: list[int | None] = [None] * len(trials)
        for trial_id, (i, _) in zip(ids, picked, strict=True):
            out[i] = trial_id
        return out

    # ---- opening for reading -------------------------------------------------------------------

    @classmethod
    def open_existing(cls, url: str) -> Store:
        """The store at `url` for reading: a missing SQLite file or a database without
        bootstudy's tables is a one-line `StorageError`, and nothing is created."""
        parsed = normalize_url(url)
        if parsed.get_backend_name() == "sqlite" and not os.path.isfile(parsed.database):
            raise StorageError(f"no SQLite database at {parsed.database} ({mask_password(url)})")
        engine = make_engine(url)
        try:
            with engine.connect() as connection:
                has_tables = sa.inspect(connection).has_table(_studies.name)
        except DBAPIError as exc:
            raise StorageError(f"could not read {mask_password(url)}: {_db_message(exc)}") from None
        finally:
            engine.dispose()
        if not has_tables:
            raise StorageError(f"{mask_password(url)} holds no bootstudy studies")
        return cls(url)

    # ---- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _writing(self, what: str) -> Iterator[Session]:
        """One write transaction: commits on success, rolls back on any error.

        An error before COMMIT keeps its cause, so `_reconnecting` runs the operation again when
        the cause is a lost connection (nothing was written); one during COMMIT does not (the
        write may have landed: running it again could write it twice)."""
        with Session(self._write_engine) as session:
            try:
                session.begin()
                self._check_fence(session)
                yield session
                session.flush()
            except DBAPIError as exc:
                _rollback(session)
                raise StorageError(f"could not {what} in {self.url}: {_db_message(exc)}") from exc
            except BaseException:
                _rollback(session)
                raise
            try:
                session.commit()
            except DBAPIError as exc:
                message = f"could not {what} in {self.url}: {_db_message(exc)} (while committing)"
                if connection_lost(exc):  # it may have landed: only an idempotent write repeats
                    raise CommitUncertain(message) from exc
                raise StorageError(message) from None

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        try:
            with Session(self.engine) as session:
                yield session
        except DBAPIError as exc:  # reads are always safe to run again: the cause stays
            raise StorageError(f"could not read {self.url}: {_db_message(exc)}") from exc

    def _dialect_insert(self, table: sa.Table) -> Any:
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)


def _running_optuna_trials(storage: optuna.storages.BaseStorage, study_name: str) -> list:
    from optuna.trial import TrialState

    try:
        optuna_study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        return []
    return storage.get_all_trials(optuna_study_id, deepcopy=False, states=(TrialState.RUNNING,))


def _same_driver(row: Any, driver: tuple[str, int]) -> bool:
    return (row.driver_host, row.driver_pid) == tuple(driver) and row.status == StudyStatus.RUNNING


def _rollback(session: Session) -> None:
    """Roll back, even on a connection that is gone (the server has rolled back already)."""
    try:
        session.rollback()
    except DBAPIError:
        pass


class LeaseLost(StorageError):
    """Another driver claimed the study (this one's lease went stale): nothing was written."""


class CommitUncertain(StorageError):
    """The connection was lost during COMMIT: the write may or may not have landed."""


# Writes that may run again even when a lost COMMIT leaves it open whether they landed: updates
# and upserts to the same values, and the two inserts that look for their own row first.
IDEMPOTENT = {
    "create_study",  # finds the row it inserted for the same driver
    "start_trial",  # finds its row by Ray's trial id and its number
    "set_study_status",
    "claim_driver",
    "beat",
    "release_driver",
    "record_epoch",
    "record_epochs",
    "finish_trial",
    "note_failed_attempts",
    "mark_stale_running",
    "mark_running_interrupted",
    "settle_stale_optuna_trials",
}


def _reconnecting(method: Callable, idempotent: bool) -> Callable:
    """`method`, run again while it fails on a lost PostgreSQL connection (engine.reconnecting):
    always before COMMIT (nothing was written); after a lost COMMIT only if `idempotent`."""

    def retryable(exc: BaseException) -> bool:
        return connection_lost(exc) and (idempotent or not isinstance(exc, CommitUncertain))

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        return reconnecting(method, *args, only_if=retryable, **kwargs)

    return run


# Every public operation of the store survives lost connections: each is one transaction (or
# reads only). import_trials is left out: it writes Optuna's tables too, trial by trial.
for _name, _method in list(vars(Store).items()):
    if callable(_method) and not _name.startswith("_") and _name not in ("close", "import_trials"):
        setattr(Store, _name, _reconnecting(_method, _name in IDEMPOTENT))


def _typed(frame: pd.DataFrame, table: sa.Table) -> pd.DataFrame:
    """Give each column the dtype its SQL type implies, the same on every backend, even if empty."""
    for column in frame.columns:
        sql_type = table.c[column].type
        if isinstance(sql_type, UTCDateTime):
            frame[column] = pd.to_datetime(frame[column], utc=True).astype("datetime64[us, UTC]")
        elif isinstance(sql_type, sa.Integer):
            frame[column] = frame[column].astype("Int64" if table.c[column].nullable else "int64")
        elif isinstance(sql_type, sa.Double):
            frame[column] = frame[column].astype("float64")
        else:
            frame[column] = frame[column].astype("str")  # missing stays missing (NaN)
    return frame


def _insert_returning(session: Session, table: sa.Table, rows: list[dict], key: sa.Column) -> list:
    """Insert many rows and return their generated keys, in the order of `rows`."""
    inserted = session.execute(
        sa.insert(table).returning(key, sort_by_parameter_order=True), rows
    ).scalars()
    return list(inserted)


def _text(value: enum.Enum | str) -> str:
    """An enum member's stored text (the tables hold plain strings)."""
    return value.value if isinstance(value, enum.Enum) else value


def _present(value: Any) -> Any:
    """None for the missing values pandas puts in text columns (None, NaN)."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _naive_utc(when: dt.datetime | None) -> dt.datetime | None:
    """Optuna's tables keep naive datetimes (UTC, as Optuna writes them)."""
    if when is None or when.tzinfo is None:
        return when
    return when.astimezone(dt.timezone.utc).replace(tzinfo=None)


def _update_if_driver(study_id: int, host: str, pid: int) -> sa.Update:
    """An update of the study's row that matches only while (host, pid) is its driver."""
    return sa.update(_studies).where(
        _studies.c.id == study_id, _studies.c.driver_host == host, _studies.c.driver_pid == pid
    )


def _next_number(session: Session, study_id: int) -> int:
    highest = session.scalar(
        sa.select(sa.func.max(_trials.c.number)).where(_trials.c.study_id == study_id)
    )
    return 0 if highest is None else highest + 1


def _study_id(study: StudyRecord | int) -> int:
    return study.id if isinstance(study, StudyRecord) else study


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _check_length(what: str, value: str | None, limit: int) -> None:
    # PostgreSQL would reject an over-long string and SQLite would keep it: refuse on both.
    if value is not None and len(value) > limit:
        raise StorageError(f"{what} {value[:40]!r}... is {len(value)} characters; at most {limit}")


def _metric(name: str, value: Any) -> float | None:
    _check_length("metric name", name, METRIC_NAME_LENGTH)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"metric {name!r} must be a number, got {value!r}") from None
    return None if math.isnan(number) else number


def _finite_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def _plain(value: Any) -> Any:
    """`value` with non-finite floats as None and numpy scalars, paths, enums as plain values."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if isinstance(value, PurePath):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if hasattr(value, "item"):  # numpy / torch scalars
        return _plain(value.item())
    raise TypeError(f"cannot store {type(value).__name__} {value!r} as JSON")


def _dumps(value: Any) -> str:
    return json.dumps(_plain(value), allow_nan=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _study_record(row: Mapping[str, Any]) -> StudyRecord:
    return StudyRecord(
        id=row["id"],
        name=row["name"],
        space=row["space"],
        dataset=row["dataset"],
        preset=row["preset"],
        command=row["command"],
        config=_loads(row["config_json"]),
        status=row["status"],
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        code_version=row["code_version"],
        package_versions=_loads(row["package_versions"]),
        hardware=_loads(row["hardware"]),
        rungs=_loads(row["rungs_json"]),
        baselines=_loads(row["baselines_json"]),
        main_view=row["main_view"],
    )


def _trial_record(row: Mapping[str, Any]) -> TrialRecord:
    fields = {column: row[column] for column in TRIAL_FRAME_COLUMNS}
    return TrialRecord(
        **{
            key: value
            for key, value in fields.items()
            if key not in ("arm_json", "params_json", "config_json", "result_json")
        },
        arm_factors=_loads(fields["arm_json"]),
        params=_loads(fields["params_json"]),
        config=_loads(fields["config_json"]),
        result=_loads(fields["result_json"]),
    )
