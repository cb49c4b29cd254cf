"""bootstudy's tables: a documented interface, read with ``pandas.read_sql``.

They live in the same database as Optuna's own tables (``studies``, ``trials``, ``alembic_version``
...), so every name here starts with ``bootstudy_`` and our migrations keep their version in
``bootstudy_alembic_version``.

Conventions, identical on SQLite and PostgreSQL:

- Times are timezone-aware UTC (SQLite stores them as UTC text; they come back aware).
- ``*_json`` columns hold strict JSON text: NaN and infinities are written as ``null``.
- ``bootstudy_trial_metrics.value`` is NULL when the trainer reported NaN (SQLite cannot store NaN,
  and PostgreSQL would sort it above every number); infinities are stored as they are.
- ``epoch`` is numbered as the trainer reports it; ``epochs_run`` counts the distinct epochs
  recorded.

Example::

    import pandas as pd
    best = pd.read_sql(
        "SELECT t.arm, t.best_val_acc FROM bootstudy_trials t"
        " JOIN bootstudy_studies s ON s.id = t.study_id"
        " WHERE s.name = 'fraction-sweep' AND t.status IN ('COMPLETE', 'REUSED')",
        "sqlite:///runs/study.db",
    )

Changing anything here needs a new migration in ``study/migrations/versions``; the contract suite
checks that the migrations build exactly these tables.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from study.status import FINISHABLE, Phase, StudyStatus, TrialStatus

__all__ = [
    "Base",
    "StudyRow",
    "TrialRow",
    "TrialMetricRow",
    "UTCDateTime",
    "STUDY_STATUSES",
    "TRIAL_STATUSES",
    "FINAL_TRIAL_STATUSES",
    "TRIAL_PHASES",
    "NAME_LENGTH",
    "SPACE_LENGTH",
    "DATASET_LENGTH",
    "PRESET_LENGTH",
    "STATUS_LENGTH",
    "CODE_VERSION_LENGTH",
    "ARM_LENGTH",
    "RAY_TRIAL_ID_LENGTH",
    "PHASE_LENGTH",
    "CONFIG_HASH_LENGTH",
    "METRIC_NAME_LENGTH",
    "MAIN_VIEW_LENGTH",
]

NAME_LENGTH = 255  # study names and Optuna study names; Optuna allows 512, 255 is plenty
SPACE_LENGTH = 64  # registered search space name
DATASET_LENGTH = 64  # registered dataset name
PRESET_LENGTH = 16  # "smoke", "cpu", "gpu"
STATUS_LENGTH = 16
CODE_VERSION_LENGTH = 64  # `git describe --always --dirty` output, or "unknown"
ARM_LENGTH = 255  # "mode=shared,fraction=0.1"
RAY_TRIAL_ID_LENGTH = 64  # Ray's trial ids are short hex strings like "a1b2c_00003"
PHASE_LENGTH = 16
CONFIG_HASH_LENGTH = 64  # sha256 hex digest of the canonical resolved trainer config
METRIC_NAME_LENGTH = 64  # "val_acc_agent", "images_per_second", ...

MAIN_VIEW_LENGTH = 32  # a report main view's registered name

STUDY_STATUSES = tuple(s.value for s in StudyStatus)
TRIAL_STATUSES = tuple(s.value for s in TrialStatus)
FINAL_TRIAL_STATUSES = tuple(s.value for s in FINISHABLE)  # what finish_trial may set
TRIAL_PHASES = tuple(p.value for p in Phase)  # Optuna/ASHA search, then seeded re-runs


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(value) for value in values)})"


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """A timezone-aware UTC datetime on every backend; naive datetimes are refused."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware UTC time")
        value = value.astimezone(dt.timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.timezone.utc)
        return value.astimezone(dt.timezone.utc)


class Base(DeclarativeBase):
    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class StudyRow(Base):
    """One study: a named run of one search space, with where and how it ran."""

    __tablename__ = "bootstudy_studies"
    __table_args__ = (sa.CheckConstraint(_one_of("status", STUDY_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(NAME_LENGTH), unique=True)
    space: Mapped[str] = mapped_column(sa.String(SPACE_LENGTH))
    dataset: Mapped[str] = mapped_column(sa.String(DATASET_LENGTH))
    preset: Mapped[str] = mapped_column(sa.String(PRESET_LENGTH))
    command: Mapped[str] = mapped_column(sa.Text)  # the command line that started the study
    config_json: Mapped[str] = mapped_column(sa.Text)  # the resolved StudyConfig
    status: Mapped[str] = mapped_column(sa.String(STATUS_LENGTH))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    code_version: Mapped[str] = mapped_column(sa.String(CODE_VERSION_LENGTH))
    package_versions: Mapped[str] = mapped_column(sa.Text)  # JSON {"torch": "2.4.1", ...}
    hardware: Mapped[str] = mapped_column(sa.Text)  # JSON {"cpu_count": 8, "gpus": [...], ...}
    # Facts the study plan derives once; the runner and the report read them from here.
    rungs_json: Mapped[str] = mapped_column(sa.Text, server_default="[]")  # ASHA's decision epochs
    baselines_json: Mapped[str] = mapped_column(sa.Text, server_default="{}")  # arm -> its baseline
    main_view: Mapped[str] = mapped_column(sa.String(MAIN_VIEW_LENGTH), server_default="arms")
    # The driver process running the study now, and when it last said so: a second driver refuses
    # to run the study while this heartbeat is fresh (see study.lease). NULL when none runs it.
    driver_host: Mapped[str | None] = mapped_column(sa.String(NAME_LENGTH))
    driver_pid: Mapped[int | None]
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # The fencing token: bumped by every claim, checked inside every write of the driver that
    # claimed it, so a driver taken over (paused past its lease) can never write again.
    lease_generation: Mapped[int] = mapped_column(default=0, server_default="0")


class TrialRow(Base):
    """One training run of one resolved config, in one arm of a study."""

    __tablename__ = "bootstudy_trials"
    __table_args__ = (
        sa.UniqueConstraint("study_id", "number"),
        sa.Index(None, "study_id", "status"),
        sa.CheckConstraint(_one_of("status", TRIAL_STATUSES), name="status"),
        sa.CheckConstraint(_one_of("phase", TRIAL_PHASES), name="phase"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    study_id: Mapped[int] = mapped_column(sa.ForeignKey(StudyRow.id, ondelete="CASCADE"))
    arm: Mapped[str] = mapped_column(sa.String(ARM_LENGTH))  # "mode=shared,fraction=0.1"
    arm_json: Mapped[str] = mapped_column(sa.Text)  # JSON {"mode": "shared", "fraction": 0.1}
    number: Mapped[int]  # 0, 1, 2, ... within the study, in start order
    optuna_study_name: Mapped[str | None] = mapped_column(sa.String(NAME_LENGTH))
    optuna_trial_id: Mapped[int | None]  # Optuna's trials.trial_id, to join its tables
    ray_trial_id: Mapped[str | None] = mapped_column(sa.String(RAY_TRIAL_ID_LENGTH))
    phase: Mapped[str] = mapped_column(sa.String(PHASE_LENGTH))
    status: Mapped[str] = mapped_column(sa.String(STATUS_LENGTH))
    params_json: Mapped[str] = mapped_column(sa.Text)  # the searched params only
    config_json: Mapped[str] = mapped_column(sa.Text)  # the fully resolved TrainConfig
    config_hash: Mapped[str] = mapped_column(sa.String(CONFIG_HASH_LENGTH), index=True)
    seed: Mapped[int]
    epochs_run: Mapped[int] = mapped_column(default=0, server_default="0")
    best_val_acc: Mapped[float | None] = mapped_column(sa.Double)
    final_val_acc: Mapped[float | None] = mapped_column(sa.Double)
    test_acc: Mapped[float | None] = mapped_column(sa.Double)
    test_acc_agent: Mapped[float | None] = mapped_column(sa.Double)
    result_json: Mapped[str | None] = mapped_column(sa.Text)  # the trainer's full result dict
    trial_seconds: Mapped[float | None] = mapped_column(sa.Double)  # wall time of the trial
    error: Mapped[str | None] = mapped_column(sa.Text)  # message + traceback of a FAILED trial
    reused_from: Mapped[int | None] = mapped_column(sa.ForeignKey("bootstudy_trials.id"))
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class TrialMetricRow(Base):
    """One number a trial reported for one epoch; every per-epoch metric lands here."""

    __tablename__ = "bootstudy_trial_metrics"

    trial_id: Mapped[int] = mapped_column(
        sa.ForeignKey(TrialRow.id, ondelete="CASCADE"), primary_key=True
    )
    epoch: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(METRIC_NAME_LENGTH), primary_key=True)
    value: Mapped[float | None] = mapped_column(sa.Double)  # NULL: the trainer reported NaN
