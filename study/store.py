"""`Store`: the only code that writes bootstudy's tables, one method per operation.

Every write is one short transaction: it lands whole or not at all, and a database error comes out
as a one-line `StorageError`. Reads return frozen dataclasses (`StudyRecord`, `TrialRecord`) or
pandas frames, never live ORM objects, so nothing outside this module holds a session.

Example::

    from study.provenance import collect
    from study.store import Store

    store = Store("sqlite:///runs/study.db")
    study = store.create_study("fraction-sweep", space="data_fraction", dataset="fashion_mnist",
                               preset="quick", command="run_study.py --space data_fraction",
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
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from study import migrations
from study.engine import BEGIN_IMMEDIATE, StorageError, make_engine, mask_password
from study.engine import _one_line as _db_message
from study.schema import (
    ARM_LENGTH,
    CODE_VERSION_LENGTH,
    DATASET_LENGTH,
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

if TYPE_CHECKING:
    import optuna

__all__ = [
    "STALE_ERROR",
    "TRIAL_FRAME_COLUMNS",
    "METRIC_FRAME_COLUMNS",
    "StudyRecord",
    "TrialRecord",
    "Store",
    "fail_stale_optuna_trials",
]

STALE_ERROR = "stale: driver died"  # error of trials `mark_stale_running` fails
TRIAL_FRAME_COLUMNS = tuple(column.name for column in TrialRow.__table__.columns)
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


class Store:
    """bootstudy's tables in the database at `url` (SQLite file or PostgreSQL).

    Opening migrates the tables to the newest schema; that is idempotent and safe from several
    processes at once. Use as a context manager, or call `close()`, to release connections.
    """

    def __init__(self, url: str):
        self.url = mask_password(url)  # for messages: never shows a password
        self.engine = make_engine(url)
        # Writes take SQLite's write lock at BEGIN (see study.engine); ignored on PostgreSQL.
        self._write_engine = self.engine.execution_options(**{BEGIN_IMMEDIATE: True})
        try:
            migrations.upgrade(self.engine)
        except DBAPIError as exc:
            self.engine.dispose()
            raise StorageError(
                f"cannot create the bootstudy tables in {self.url}: {_db_message(exc)}"
            ) from None
        except BaseException:
            self.engine.dispose()
            raise

    @classmethod
    def open(cls, url: str) -> Store:
        """Same as ``Store(url)``."""
        return cls(url)

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
    ) -> StudyRecord:
        """Add a RUNNING study; `provenance` is `study.provenance.collect()`'s dict."""
        _check_length("study name", name, NAME_LENGTH)
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
            status="RUNNING",
            created_at=_utcnow(),
            finished_at=None,
            code_version=code_version,
            package_versions=_dumps(provenance.get("package_versions", {})),
            hardware=_dumps(provenance.get("hardware", {})),
        )
        with self._writing(f"create study {name!r}") as session:
            exists = session.scalar(sa.select(_studies.c.id).where(_studies.c.name == name))
            if exists is not None:
                raise StorageError(
                    f"study {name!r} already exists in {self.url}; use --resume or another --study"
                )
            study_id = session.execute(sa.insert(_studies).values(row)).inserted_primary_key[0]
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

    def set_study_status(self, name: str, status: str, finished: bool = True) -> None:
        """Set a study's status; `finished` stamps ``finished_at`` now, otherwise clears it."""
        values = {"status": status, "finished_at": _utcnow() if finished else None}
        with self._writing(f"set the status of study {name!r} to {status!r}") as session:
            updated = session.execute(
                sa.update(_studies).where(_studies.c.name == name).values(values)
            ).rowcount
        if updated == 0:
            self.get_study(name)  # raises the "no study named" error

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
            phase=phase,
            status="RUNNING",
            params_json=_dumps(params),
            config_json=_dumps(config),
            config_hash=config_hash,
            seed=seed,
            epochs_run=0,
            started_at=_utcnow(),
        )
        with self._writing(f"start trial {number} of study {study_id}") as session:
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
        status: str,
        *,
        result: Mapping[str, Any] | None = None,
        error: str | None = None,
        trial_seconds: float | None = None,
        final_val_acc: float | None = None,
        test_acc: float | None = None,
        test_acc_agent: float | None = None,
    ) -> None:
        """Close a trial as COMPLETE, PRUNED or FAILED, with what it produced or why it failed."""
        if status in ("RUNNING", "REUSED"):
            raise ValueError(f"finish_trial takes COMPLETE, PRUNED or FAILED, not {status!r}")
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

    def mark_stale_running(self, study_id: int) -> list[int]:
        """Fail the study's trials still RUNNING (their driver died); return their ids."""
        with self._writing(f"fail the stale trials of study {study_id}") as session:
            stale = session.scalars(
                sa.update(_trials)
                .where(_trials.c.study_id == study_id, _trials.c.status == "RUNNING")
                .values(status="FAILED", error=STALE_ERROR, finished_at=_utcnow())
                .returning(_trials.c.id)
            ).all()
        return sorted(stale)

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
                .where(_trials.c.config_hash == config_hash, _trials.c.status == "COMPLETE")
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
            if source is None or source.status != "COMPLETE":
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
                phase=phase,
                status="REUSED",
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
        self, study_id: int, arm: str | None = None, statuses: Iterable[str] | None = None
    ) -> int:
        """How many trials the study has, optionally only of one arm and/or some statuses."""
        query = (
            sa.select(sa.func.count()).select_from(_trials).where(_trials.c.study_id == study_id)
        )
        if arm is not None:
            query = query.where(_trials.c.arm == arm)
        if statuses is not None:
            query = query.where(_trials.c.status.in_(list(statuses)))
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

    # ---- frames --------------------------------------------------------------------------------

    def trials_frame(self, study_name: str) -> pd.DataFrame:
        """The study's rows of ``bootstudy_trials`` (columns `TRIAL_FRAME_COLUMNS`), by number."""
        query = (
            sa.select(_trials)
            .join(_studies, _studies.c.id == _trials.c.study_id)
            .where(_studies.c.name == study_name)
            .order_by(_trials.c.number)
        )
        with self._reading() as session:
            rows = session.execute(query).all()
        if not rows:
            self.get_study(study_name)  # an unknown study is an error, not an empty frame
        frame = pd.DataFrame([tuple(row) for row in rows], columns=list(TRIAL_FRAME_COLUMNS))
        return _typed(frame, _trials)

    def metrics_frame(self, study_name: str) -> pd.DataFrame:
        """The study's per-epoch metrics in long form: trial_id, epoch, name, value (NaN: NULL)."""
        query = (
            sa.select(*(_metrics.c[column] for column in METRIC_FRAME_COLUMNS))
            .join(_trials, _trials.c.id == _metrics.c.trial_id)
            .join(_studies, _studies.c.id == _trials.c.study_id)
            .where(_studies.c.name == study_name)
            .order_by(_metrics.c.trial_id, _metrics.c.epoch, _metrics.c.name)
        )
        with self._reading() as session:
            rows = session.execute(query).all()
        if not rows:
            self.get_study(study_name)
        frame = pd.DataFrame([tuple(row) for row in rows], columns=list(METRIC_FRAME_COLUMNS))
        return _typed(frame, _metrics)

    # ---- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _writing(self, what: str) -> Iterator[Session]:
        """One write transaction: commits on success, rolls back on any error."""
        try:
            with Session(self._write_engine) as session, session.begin():
                yield session
        except DBAPIError as exc:
            raise StorageError(f"could not {what} in {self.url}: {_db_message(exc)}") from None

    @contextmanager
    def _reading(self) -> Iterator[Session]:
        try:
            with Session(self.engine) as session:
                yield session
        except DBAPIError as exc:
            raise StorageError(f"could not read {self.url}: {_db_message(exc)}") from None

    def _dialect_insert(self, table: sa.Table) -> Any:
        if self.engine.dialect.name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)


def fail_stale_optuna_trials(
    storage: optuna.storages.BaseStorage, study_names: Iterable[str]
) -> list[int]:
    """Set Optuna's RUNNING trials of these studies to FAIL; return their Optuna trial ids.

    The counterpart of `Store.mark_stale_running` for Optuna's own tables, so a resumed study's
    sampler does not wait on trials nobody runs. Studies Optuna does not know are skipped.
    """
    from optuna.trial import TrialState

    failed: list[int] = []
    for name in study_names:
        try:
            optuna_study_id = storage.get_study_id_from_name(name)
        except KeyError:
            continue
        running = storage.get_all_trials(
            optuna_study_id, deepcopy=False, states=(TrialState.RUNNING,)
        )
        for trial in running:
            storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            failed.append(trial._trial_id)
    return failed


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
