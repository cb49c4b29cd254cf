"""The storage contract: one suite, run on SQLite and on PostgreSQL (after optuna's STORAGE_MODES).

Every test drives the real `Store` on a real database and asserts exact states and numbers.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import multiprocessing
import os
import subprocess
import threading
import time
import warnings
from pathlib import Path

import optuna
import pandas as pd
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from study import (
    StorageError,
    Store,
    StudyRecord,
    make_engine,
    mask_password,
    migrations,
    optuna_storage,
)
from study.engine import normalize_url
from study.provenance import collect
from study.schema import Base
from study.store import METRIC_FRAME_COLUMNS, STALE_ERROR, TRIAL_FRAME_COLUMNS

optuna.logging.set_verbosity(optuna.logging.WARNING)

PROVENANCE = {
    "code_version": "3680d0b-dirty",
    "package_versions": {"torch": "2.4.1", "timm": None},
    "hardware": {"cpu_count": 2, "gpus": []},
}
HASH_A, HASH_B = "a" * 64, "b" * 64


@pytest.fixture
def store(storage_url):
    with Store(storage_url) as opened:
        yield opened


def _study(store: Store, name: str = "sweep") -> StudyRecord:
    return store.create_study(
        name,
        space="data_fraction",
        dataset="fashion_mnist",
        preset="smoke",
        command="run_study.py --space data_fraction",
        config={"arms": ["fraction=0.1"], "epochs": 2},
        provenance=PROVENANCE,
    )


def _trial(store, study_id, number=None, arm="fraction=0.1", config_hash=HASH_A, seed=0):
    return store.start_trial(
        study_id,
        arm=arm,
        arm_factors={"fraction": 0.1},
        number=number,
        phase="search",
        params={"lr": 0.001},
        config={"lr": 0.001, "epochs": 2},
        config_hash=config_hash,
        seed=seed,
        optuna_study_name="sweep/fraction=0.1",
        optuna_trial_id=7,
        ray_trial_id="a1b2c_00000",
    )


def _is_utc(when: dt.datetime) -> bool:
    return when.tzinfo is not None and when.utcoffset() == dt.timedelta(0)


# ---- studies -----------------------------------------------------------------------------------


def test_create_and_get_study_round_trips_every_field(store):
    provenance = collect(gpus=False)
    before = dt.datetime.now(dt.timezone.utc)
    created = store.create_study(
        "sweep", "data_fraction", "fashion_mnist", "smoke", "run_study.py", {"seed": 1}, provenance
    )
    got = store.get_study("sweep")
    assert got == created
    assert (got.name, got.space, got.dataset, got.preset) == (
        "sweep",
        "data_fraction",
        "fashion_mnist",
        "smoke",
    )
    assert (got.command, got.config, got.status, got.finished_at) == (
        "run_study.py",
        {"seed": 1},
        "RUNNING",
        None,
    )
    assert _is_utc(got.created_at) and before <= got.created_at <= dt.datetime.now(dt.timezone.utc)
    assert got.code_version == provenance["code_version"]
    assert got.package_versions["sqlalchemy"] == sa.__version__
    assert got.package_versions["optuna"] == optuna.__version__
    assert got.hardware["cpu_count"] == os.cpu_count()
    assert got.hardware["ram_bytes"] > 0
    assert store.list_studies() == [got]


def test_duplicate_study_name_is_refused(store):
    _study(store)
    with pytest.raises(StorageError, match="study 'sweep' already exists.*use --resume or another"):
        _study(store)
    assert len(store.list_studies()) == 1


def test_missing_study_error_names_the_known_ones(store):
    _study(store, "alpha")
    _study(store, "beta")
    with pytest.raises(StorageError, match=r"no study named 'gamma' .*it holds: alpha, beta\)$"):
        store.get_study("gamma")


def test_set_study_status(store):
    _study(store)
    store.set_study_status("sweep", "FINISHED")
    finished = store.get_study("sweep")
    assert finished.status == "FINISHED" and _is_utc(finished.finished_at)
    store.set_study_status("sweep", "RUNNING", finished=False)
    assert (store.get_study("sweep").status, store.get_study("sweep").finished_at) == (
        "RUNNING",
        None,
    )
    with pytest.raises(StorageError, match="ck_bootstudy_studies_status"):
        store.set_study_status("sweep", "DONE")
    assert store.get_study("sweep").status == "RUNNING"
    with pytest.raises(StorageError, match="no study named 'other'"):
        store.set_study_status("other", "FAILED")


def test_names_longer_than_their_column_are_refused_on_every_backend(store):
    with pytest.raises(StorageError, match="study name .* is 256 characters; at most 255"):
        _study(store, "x" * 256)
    study = _study(store)
    trial_id = _trial(store, study.id)
    with pytest.raises(StorageError, match="metric name .* is 65 characters; at most 64"):
        store.record_epoch(trial_id, 1, {"m" * 65: 1.0})
    assert store.list_studies() == [study]


# ---- trials ------------------------------------------------------------------------------------


def test_trial_numbers_count_per_study_from_zero(store):
    first, second = _study(store, "first"), _study(store, "second")
    assert store.next_trial_number(first) == 0
    ids = [_trial(store, first.id, number=store.next_trial_number(first)) for _ in range(3)]
    assert [store.get_trial(i).number for i in ids] == [0, 1, 2]
    assert store.next_trial_number(first.id) == 3
    assert store.next_trial_number(second) == 0
    auto = _trial(store, second.id)  # number=None takes the next free one
    assert store.get_trial(auto).number == 0
    # the same Ray trial and number again: its own insert, landed (a COMMIT answer was lost)
    assert _trial(store, first.id, number=1) == ids[1]
    with pytest.raises(StorageError, match="could not start trial 1 of study"):
        store.start_trial(
            first.id, arm="fraction=0.1", arm_factors={}, number=1, phase="search", params={},
            config={}, config_hash=HASH_A, seed=0, ray_trial_id="another_00001",
        )  # fmt: skip
    assert store.count_trials(first.id) == 3


def test_started_trial_round_trips(store):
    study = _study(store)
    trial = store.get_trial(_trial(store, study.id, seed=3))
    assert (trial.study_id, trial.arm, trial.arm_factors, trial.phase, trial.status) == (
        study.id,
        "fraction=0.1",
        {"fraction": 0.1},
        "search",
        "RUNNING",
    )
    assert (trial.params, trial.config, trial.config_hash, trial.seed) == (
        {"lr": 0.001},
        {"lr": 0.001, "epochs": 2},
        HASH_A,
        3,
    )
    assert (trial.optuna_study_name, trial.optuna_trial_id, trial.ray_trial_id) == (
        "sweep/fraction=0.1",
        7,
        "a1b2c_00000",
    )
    assert (trial.epochs_run, trial.best_val_acc, trial.result, trial.finished_at) == (
        0,
        None,
        None,
        None,
    )
    assert _is_utc(trial.started_at)


def test_record_epoch_is_an_idempotent_upsert(store):
    study = _study(store)
    trial_id = _trial(store, study.id)
    store.record_epoch(trial_id, 1, {"val_acc": 0.5, "train_loss": 2.0})
    store.record_epoch(trial_id, 1, {"val_acc": 0.7, "train_loss": 1.5})  # a retried report
    trial = store.get_trial(trial_id)
    assert (trial.epochs_run, trial.best_val_acc) == (1, 0.7)
    store.record_epoch(trial_id, 2, {"val_acc": 0.6, "train_loss": 1.0, "lr": 1e-4})
    store.record_epoch(trial_id, 1, {"val_acc": 0.4})  # best is the max of what is stored now
    trial = store.get_trial(trial_id)
    assert (trial.epochs_run, trial.best_val_acc) == (2, 0.6)
    frame = store.metrics_frame("sweep")
    assert list(frame.columns) == list(METRIC_FRAME_COLUMNS)
    assert frame.to_dict("records") == [
        {"trial_id": trial_id, "epoch": 1, "name": "train_loss", "value": 1.5},
        {"trial_id": trial_id, "epoch": 1, "name": "val_acc", "value": 0.4},
        {"trial_id": trial_id, "epoch": 2, "name": "lr", "value": 1e-4},
        {"trial_id": trial_id, "epoch": 2, "name": "train_loss", "value": 1.0},
        {"trial_id": trial_id, "epoch": 2, "name": "val_acc", "value": 0.6},
    ]


def test_nan_is_stored_as_null_and_infinity_as_itself(store):
    study = _study(store)
    trial_id = _trial(store, study.id)
    store.record_epoch(trial_id, 0, {"val_acc": 0.25, "train_loss": float("nan")})
    store.record_epoch(trial_id, 1, {"val_acc": float("nan"), "train_loss": float("inf")})
    store.finish_trial(
        trial_id,
        "FAILED",
        result={"val_acc": float("nan"), "history": [1.0, float("-inf")]},
        error="NonFiniteLoss",
        trial_seconds=float("nan"),
        final_val_acc=float("nan"),
    )
    with store.engine.connect() as connection:
        stored = connection.execute(
            sa.text("SELECT epoch, name, value FROM bootstudy_trial_metrics ORDER BY epoch, name")
        ).all()
        result_json = connection.execute(
            sa.text("SELECT result_json FROM bootstudy_trials")
        ).scalar_one()
    assert [tuple(row) for row in stored] == [
        (0, "train_loss", None),
        (0, "val_acc", 0.25),
        (1, "train_loss", math.inf),
        (1, "val_acc", None),
    ]
    assert result_json == '{"val_acc": null, "history": [1.0, null]}'
    trial = store.get_trial(trial_id)
    assert (trial.epochs_run, trial.best_val_acc, trial.final_val_acc, trial.trial_seconds) == (
        2,
        0.25,
        None,
        None,
    )
    curve = store.metric_curve(trial_id, "val_acc")
    assert curve[0] == (0, 0.25) and curve[1][0] == 1 and math.isnan(curve[1][1])
    values = store.metrics_frame("sweep")["value"].tolist()
    assert math.isnan(values[0]) and values[1:3] == [0.25, math.inf] and math.isnan(values[3])


@pytest.mark.parametrize("status", ["COMPLETE", "PRUNED", "FAILED"])
def test_finish_trial_records_the_outcome(store, status):
    study = _study(store)
    trial_id = _trial(store, study.id)
    store.record_epoch(trial_id, 1, {"val_acc": 0.8})
    store.finish_trial(
        trial_id,
        status,
        result={"val_acc": 0.81, "per_class": [0.5, 1.0]},
        error="Traceback: boom" if status == "FAILED" else None,
        trial_seconds=12.5,
        final_val_acc=0.81,
        test_acc=0.79,
        test_acc_agent=0.75,
    )
    trial = store.get_trial(trial_id)
    assert (trial.status, trial.result, trial.trial_seconds) == (
        status,
        {"val_acc": 0.81, "per_class": [0.5, 1.0]},
        12.5,
    )
    assert (trial.final_val_acc, trial.test_acc, trial.test_acc_agent, trial.best_val_acc) == (
        0.81,
        0.79,
        0.75,
        0.8,
    )
    assert trial.error == ("Traceback: boom" if status == "FAILED" else None)
    assert _is_utc(trial.finished_at) and trial.finished_at >= trial.started_at
    assert store.count_trials(study.id, statuses=[status]) == 1


def test_a_refused_write_leaves_the_row_unchanged(store):
    study = _study(store)
    trial_id = _trial(store, study.id)
    store.record_epoch(trial_id, 1, {"val_acc": 0.5})
    before = store.get_trial(trial_id)
    with pytest.raises(StorageError, match="could not finish trial .*ck_bootstudy_trials_status"):
        store.finish_trial(trial_id, "DONE", result={"val_acc": 0.9}, trial_seconds=3.0)
    assert store.get_trial(trial_id) == before
    with pytest.raises(ValueError, match="COMPLETE, PRUNED, FAILED or INTERRUPTED, not 'RUNNING'"):
        store.finish_trial(trial_id, "RUNNING")
    with pytest.raises(StorageError, match="no trial with that id"):
        store.finish_trial(trial_id + 100, "COMPLETE")
    with pytest.raises(StorageError, match=f"could not record epoch 1 of trial {trial_id + 100}"):
        store.record_epoch(trial_id + 100, 1, {"val_acc": 0.9})  # foreign key: no such trial
    assert store.metrics_frame("sweep")[["trial_id", "value"]].values.tolist() == [[trial_id, 0.5]]


def test_mark_stale_running_fails_only_running_trials_of_that_study(store):
    study, other = _study(store, "sweep"), _study(store, "other")
    running = _trial(store, study.id)
    done = _trial(store, study.id)
    store.finish_trial(done, "COMPLETE", final_val_acc=0.5)
    elsewhere = _trial(store, other.id)
    assert store.mark_stale_running(study.id) == [running]
    stale = store.get_trial(running)
    assert (stale.status, stale.error) == ("FAILED", STALE_ERROR)
    assert _is_utc(stale.finished_at)
    assert store.get_trial(done).status == "COMPLETE"
    assert store.get_trial(elsewhere).status == "RUNNING"
    assert store.mark_stale_running(study.id) == []


def test_find_completed_by_hash_returns_only_complete_trials(store):
    study = _study(store)
    for status in ("PRUNED", "FAILED"):
        store.finish_trial(_trial(store, study.id), status)
    _trial(store, study.id)  # RUNNING
    assert store.find_completed_by_hash(HASH_A) is None
    complete = _trial(store, study.id)
    store.finish_trial(complete, "COMPLETE", final_val_acc=0.9)
    _trial(store, study.id, config_hash=HASH_B)
    found = store.find_completed_by_hash(HASH_A)
    assert (found.id, found.status, found.final_val_acc) == (complete, "COMPLETE", 0.9)
    assert store.find_completed_by_hash("c" * 64) is None


def test_record_reused_copies_results_and_metrics(store):
    first, second = _study(store, "first"), _study(store, "second")
    original = _trial(store, first.id)
    store.record_epoch(original, 1, {"val_acc": 0.6, "train_loss": 1.0})
    store.record_epoch(original, 2, {"val_acc": 0.7, "train_loss": 0.5})
    store.finish_trial(
        original,
        "COMPLETE",
        result={"val_acc": 0.7},
        trial_seconds=30.0,
        final_val_acc=0.7,
        test_acc=0.69,
        test_acc_agent=0.6,
    )
    _trial(store, second.id)  # number 0 is taken, so the reused row gets number 1
    reused = store.record_reused(
        second.id,
        store.find_completed_by_hash(HASH_A),
        arm="fraction=0.1",
        arm_factors={"fraction": 0.1},
        number=None,
        phase="final",
        optuna_trial_id=11,
    )
    row, source = store.get_trial(reused), store.get_trial(original)
    assert (row.study_id, row.number, row.status, row.reused_from, row.phase) == (
        second.id,
        1,
        "REUSED",
        original,
        "final",
    )
    copied = (
        "params",
        "config",
        "config_hash",
        "seed",
        "epochs_run",
        "best_val_acc",
        "final_val_acc",
        "test_acc",
        "test_acc_agent",
        "result",
        "trial_seconds",
    )
    assert {f: getattr(row, f) for f in copied} == {f: getattr(source, f) for f in copied}
    assert (row.optuna_trial_id, row.ray_trial_id, row.error) == (11, None, None)
    metrics = store.metrics_frame("second")
    assert metrics.to_dict("records") == [
        {"trial_id": reused, "epoch": 1, "name": "train_loss", "value": 1.0},
        {"trial_id": reused, "epoch": 1, "name": "val_acc", "value": 0.6},
        {"trial_id": reused, "epoch": 2, "name": "train_loss", "value": 0.5},
        {"trial_id": reused, "epoch": 2, "name": "val_acc", "value": 0.7},
    ]
    assert store.metric_curve(reused, "val_acc") == [(1, 0.6), (2, 0.7)]
    assert store.metric_curve(reused, "no_such_metric") == []
    assert store.find_completed_by_hash(HASH_A).id == original  # REUSED rows are not sources
    running = _trial(store, first.id)
    with pytest.raises(StorageError, match=f"cannot reuse trial {running}: it is RUNNING"):
        store.record_reused(second.id, running, "fraction=0.1", {}, None, "search")
    with pytest.raises(StorageError, match="cannot reuse trial 999: it does not exist"):
        store.record_reused(second.id, 999, "fraction=0.1", {}, None, "search")
    assert store.count_trials(second.id) == 2


def test_count_trials_by_arm_and_status(store):
    study = _study(store)
    for arm, status in [("a", "COMPLETE"), ("a", "PRUNED"), ("b", "COMPLETE"), ("a", None)]:
        trial_id = _trial(store, study.id, arm=arm)
        if status:
            store.finish_trial(trial_id, status)
    assert store.count_trials(study.id) == 4
    assert store.count_trials(study.id, arm="a") == 3
    assert store.count_trials(study.id, arm="a", statuses=("COMPLETE", "PRUNED")) == 2
    assert store.count_trials(study.id, statuses=["RUNNING"]) == 1
    assert store.count_trials(study.id, arm="c") == 0


# ---- frames ------------------------------------------------------------------------------------


def test_trials_frame_has_the_table_columns_and_values(store):
    study = _study(store)
    empty = store.trials_frame("sweep")
    assert list(empty.columns) == list(TRIAL_FRAME_COLUMNS) and len(empty) == 0
    assert list(TRIAL_FRAME_COLUMNS) == [
        "id", "study_id", "arm", "arm_json", "number", "optuna_study_name", "optuna_trial_id",
        "ray_trial_id", "phase", "status", "params_json", "config_json", "config_hash", "seed",
        "epochs_run", "best_val_acc", "final_val_acc", "test_acc", "test_acc_agent",
        "result_json", "trial_seconds", "error", "reused_from", "started_at", "finished_at",
    ]  # fmt: skip
    done = _trial(store, study.id, seed=1)
    store.record_epoch(done, 1, {"val_acc": 0.5})
    store.finish_trial(done, "COMPLETE", result={"a": 1}, trial_seconds=2.0, final_val_acc=0.5)
    running = _trial(store, study.id, arm="fraction=1.0", seed=2)
    frame = store.trials_frame("sweep")
    assert frame["id"].tolist() == [done, running]
    assert frame["number"].tolist() == [0, 1]
    assert frame["arm"].tolist() == ["fraction=0.1", "fraction=1.0"]
    assert frame["status"].tolist() == ["COMPLETE", "RUNNING"]
    assert frame["epochs_run"].tolist() == [1, 0]
    assert frame["result_json"].iloc[0] == '{"a": 1}' and pd.isna(frame["result_json"].iloc[1])
    assert frame["best_val_acc"].iloc[0] == 0.5 and math.isnan(frame["best_val_acc"].iloc[1])
    assert frame["trial_seconds"].iloc[0] == 2.0
    assert frame["reused_from"].isna().all() and frame["optuna_trial_id"].tolist() == [7, 7]
    assert str(frame["started_at"].dtype) == "datetime64[us, UTC]"
    assert str(frame["finished_at"].dtype) == "datetime64[us, UTC]"
    assert pd.isna(frame["finished_at"].iloc[1])
    assert frame.dtypes.to_dict() == empty.dtypes.to_dict()  # same dtypes, empty or not
    with pytest.raises(StorageError, match="no study named 'nope'"):
        store.trials_frame("nope")
    with pytest.raises(StorageError, match="no study named 'nope'"):
        store.metrics_frame("nope")


def test_frames_equal_what_read_sql_sees(store):
    study = _study(store)
    trial_id = _trial(store, study.id)
    store.record_epoch(trial_id, 3, {"val_acc": 0.25, "epoch_seconds": 1.5})
    raw = pd.read_sql(
        "SELECT trial_id, epoch, name, value FROM bootstudy_trial_metrics ORDER BY epoch, name",
        store.engine,
    )
    assert raw.to_dict("records") == store.metrics_frame("sweep").to_dict("records")


# ---- migrations and Optuna ---------------------------------------------------------------------


def test_migrations_are_idempotent_and_build_exactly_the_models(storage_url):
    Store(storage_url).close()
    with Store(storage_url) as store:
        _study(store)
    with Store(storage_url) as store:
        assert [s.name for s in store.list_studies()] == ["sweep"]
        assert migrations.current_revision(store.engine) == migrations.head_revision()
        with store.engine.connect() as connection:
            versions = connection.execute(
                sa.text(f"SELECT version_num FROM {migrations.VERSION_TABLE}")
            ).scalars()
            assert list(versions) == [migrations.head_revision()]
            context = MigrationContext.configure(
                connection,
                opts={"include_name": _ours, "compare_type": True},
            )
            assert compare_metadata(context, Base.metadata) == []


def _ours(name, type_, parent_names):
    return type_ != "table" or (name.startswith("bootstudy_") and "alembic" not in name)


def test_three_processes_opening_at_once_all_succeed(storage_url):
    context = multiprocessing.get_context("fork")  # children reuse the imported modules
    start = context.Event()
    children = [context.Process(target=_open_when_told, args=(storage_url, start)) for _ in "abc"]
    for child in children:
        child.start()
    start.set()
    for child in children:
        child.join(timeout=60)
    assert [child.exitcode for child in children] == [0, 0, 0]
    with Store(storage_url) as store:
        assert migrations.current_revision(store.engine) == migrations.head_revision()


def _open_when_told(url: str, start) -> None:
    start.wait()
    Store(url).close()


def _optuna_rdb_url(storage_url: str) -> str:
    return normalize_url(storage_url).render_as_string(hide_password=False)


def _tiny_optuna_study(storage_url: str) -> optuna.Study:
    study = optuna.create_study(
        study_name="sweep/fraction=0.1",
        storage=optuna_storage(storage_url),
        sampler=optuna.samplers.RandomSampler(seed=0),
        load_if_exists=True,
    )
    study.optimize(lambda trial: (trial.suggest_float("x", -1.0, 1.0) - 0.5) ** 2, n_trials=3)
    return study


@pytest.mark.parametrize("order", ["ours_first", "optuna_first"])
def test_optuna_and_bootstudy_tables_coexist(storage_url, order):
    if order == "optuna_first":
        optuna_study = _tiny_optuna_study(storage_url)
        store = Store(storage_url)
    else:
        store = Store(storage_url)
        optuna_study = _tiny_optuna_study(storage_url)
    with store:
        trial_id = _trial(store, _study(store).id)
        store.record_epoch(trial_id, 1, {"val_acc": 0.5})
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "does not complain": no warning either
            plain = optuna.storages.RDBStorage(_optuna_rdb_url(storage_url))
        reloaded = optuna.load_study(study_name="sweep/fraction=0.1", storage=plain)
        assert len(reloaded.trials) == 3
        assert reloaded.best_value == optuna_study.best_value
        assert plain.get_current_version() == plain.get_head_version()
        plain.engine.dispose()
        assert store.get_trial(trial_id).best_val_acc == 0.5
        assert migrations.current_revision(store.engine) == migrations.head_revision()
        with store.engine.connect() as connection:
            tables = set(sa.inspect(connection).get_table_names())
    assert {"studies", "trials", "alembic_version", "bootstudy_alembic_version"} <= tables
    assert {"bootstudy_studies", "bootstudy_trials", "bootstudy_trial_metrics"} <= tables


def test_settling_fails_running_optuna_trials_with_no_row_and_leaves_finished_ones(
    store, storage_url
):
    storage = optuna_storage(storage_url)
    study = optuna.create_study(study_name="sweep/a", storage=storage)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=1)
    stale = study.ask()  # RUNNING, its worker gone
    settled = store.settle_stale_optuna_trials(storage, ["sweep/a", "never-created"], "val_acc")
    assert settled == {"COMPLETE": [], "PRUNED": [], "FAIL": [stale._trial_id]}
    states = [trial.state for trial in study.get_trials()]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert store.settle_stale_optuna_trials(storage, ["sweep/a"], "val_acc")["FAIL"] == []
    storage.engine.dispose()


def test_settle_stale_optuna_trials_keeps_the_results_our_rows_hold(store, storage_url):
    """A driver killed after writing our row but before Optuna was told: resume tells Optuna what
    our row says (value and missing intermediate values), and fails only what never ended."""
    from optuna.trial import TrialState

    storage = optuna_storage(storage_url)
    optuna_study = optuna.create_study(
        study_name="sweep/fraction=0.1", storage=storage, direction="maximize"
    )
    study = _study(store)
    asked = [optuna_study.ask() for _ in range(5)]
    asked[0].report(0.25, 0)  # this one report reached Optuna before the kill
    outcomes = ["COMPLETE", "PRUNED", "RUNNING", "FAILED"]  # asked[4] never got a row
    for trial, outcome in zip(asked[:4], outcomes, strict=True):
        row = store.start_trial(
            study.id,
            arm="fraction=0.1",
            arm_factors={"fraction": 0.1},
            number=None,
            phase="search",
            params={},
            config={},
            config_hash=HASH_A,
            seed=0,
            optuna_study_name="sweep/fraction=0.1",
            optuna_trial_id=trial._trial_id,
        )
        store.record_epochs(row, {0: {"val_acc": 0.25}, 1: {"val_acc": 0.5}})
        if outcome != "RUNNING":
            store.finish_trial(row, outcome, final_val_acc=0.5)
    store.mark_stale_running(study.id)

    settled = store.settle_stale_optuna_trials(
        storage, ["sweep/fraction=0.1", "unknown"], "val_acc"
    )

    ids = [trial._trial_id for trial in asked]
    assert settled == {"COMPLETE": [ids[0]], "PRUNED": [ids[1]], "FAIL": ids[2:]}
    frozen = {ft._trial_id: ft for ft in optuna_study.get_trials()}
    assert [frozen[i].state for i in ids] == [TrialState.COMPLETE, TrialState.PRUNED] + [
        TrialState.FAIL
    ] * 3
    assert frozen[ids[0]].value == 0.5
    assert frozen[ids[0]].intermediate_values == {0: 0.25, 1: 0.5}
    assert frozen[ids[1]].intermediate_values == {0: 0.25, 1: 0.5}
    rows = {r.optuna_trial_id: r.id for r in store.trials_frame(study.name).itertuples()}
    assert [frozen[i].user_attrs.get("bootstudy_trial_id") for i in ids] == [
        rows[i] for i in ids[:4]
    ] + [None]
    assert store.settle_stale_optuna_trials(storage, ["sweep/fraction=0.1"], "val_acc") == {
        "COMPLETE": [],
        "PRUNED": [],
        "FAIL": [],
    }
    storage.engine.dispose()


def test_imported_trials_read_back_through_the_store_and_through_optuna(storage_url):
    """`import_trials` writes what a search would leave: our rows, metrics, and Optuna trials that
    `optuna.load_study` sees with the same states, params, values and intermediate values as
    `optuna_trials_frame`."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from study.store import ImportedTrial

    storage = optuna_storage(storage_url)
    optuna.create_study(study_name="sweep/fraction=0.1", storage=storage, direction="maximize")
    storage.engine.dispose()
    distributions = {
        "lr": FloatDistribution(1e-4, 1e-2, log=True),
        "layers": CategoricalDistribution(["all", "first"]),
    }
    start = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)

    def trial(status, curve, params, phase="search"):
        return ImportedTrial(
            arm="fraction=0.1", arm_factors={"fraction": 0.1}, phase=phase, status=status,
            params={"lr": params[0], "hint_layers": [0] if params[1] == "first" else None},
            config={"lr": params[0]}, config_hash=HASH_A, seed=0, started_at=start,
            finished_at=start + dt.timedelta(seconds=60), curves={"val_acc": curve},
            final_val_acc=curve[-1], trial_seconds=60.0,
            optuna_study_name="sweep/fraction=0.1" if phase == "search" else None,
            optuna_params={"lr": params[0], "layers": params[1]}, distributions=distributions,
        )  # fmt: skip

    with Store(storage_url) as store:
        study = _study(store)
        ids = store.import_trials(
            study,
            [
                trial("COMPLETE", [0.5, 0.7, 0.6], (1e-3, "first")),
                trial("PRUNED", [0.4], (3e-3, "all")),
                trial("FAILED", [0.3, float("nan")], (2e-4, "all")),
                trial("COMPLETE", [0.55, 0.72, 0.74], (1e-3, "first"), phase="final"),
            ],
        )
        frame = store.trials_frame("sweep", parsed=True)
        assert frame["id"].tolist() == ids and frame["number"].tolist() == [0, 1, 2, 3]
        assert frame["status"].tolist() == ["COMPLETE", "PRUNED", "FAILED", "COMPLETE"]
        assert frame["epochs_run"].tolist() == [3, 1, 2, 3]
        assert frame["best_val_acc"].tolist() == [0.7, 0.4, 0.3, 0.74]
        assert frame["params"].iloc[0] == {"lr": 1e-3, "hint_layers": [0]}
        assert store.count_metrics(study.id) == 9
        curves = store.metrics_frame("sweep", trial_ids=ids[:1], names=["val_acc"])
        assert curves["value"].tolist() == [0.5, 0.7, 0.6]
        optuna_frame = store.optuna_trials_frame(["sweep/fraction=0.1", "sweep/unknown"])
        assert frame["optuna_trial_id"].tolist()[:3] == optuna_frame["trial_id"].tolist()
        assert pd.isna(frame["optuna_trial_id"].iloc[3])
    plain = optuna.storages.RDBStorage(_optuna_rdb_url(storage_url))
    loaded = optuna.load_study(study_name="sweep/fraction=0.1", storage=plain).trials
    plain.engine.dispose()
    assert [t.state.name for t in loaded] == ["COMPLETE", "PRUNED", "FAIL"]
    assert optuna_frame["state"].tolist() == ["COMPLETE", "PRUNED", "FAIL"]
    assert [t.number for t in loaded] == optuna_frame["number"].tolist() == [0, 1, 2]
    assert [t.params for t in loaded] == [
        {"lr": row.lr, "layers": row.layers} for row in optuna_frame.itertuples()
    ]
    assert loaded[0].params == {"lr": 1e-3, "layers": "first"}
    assert loaded[0].value == 0.6 and optuna_frame["value"].iloc[0] == 0.6
    assert optuna_frame["value"].iloc[1:].isna().all()
    assert [t.intermediate_values for t in loaded] == [{1: 0.5, 2: 0.7, 3: 0.6}, {1: 0.4}, {1: 0.3}]
    assert optuna_frame.attrs["distributions"] == distributions


def test_the_declared_optuna_tables_match_optunas_models():
    """The store reads Optuna's tables in bulk; their declared shape must be Optuna's own."""
    from optuna.storages._rdb import models

    from study.optuna_schema import optuna_tables

    ours = optuna_tables()
    for table in (ours.studies, ours.trials, ours.params, ours.values, ours.intermediate_values):
        theirs = models.BaseModel.metadata.tables[table.name]
        for column in table.columns:
            assert column.name in theirs.columns, (table.name, column.name)
            assert column.primary_key == theirs.columns[column.name].primary_key
            their_type = theirs.columns[column.name].type
            assert type(column.type) is type(their_type) or (
                isinstance(column.type, sa.Float) and isinstance(their_type, sa.Float)
            ), (table.name, column.name)
            if isinstance(column.type, sa.Enum):
                assert (column.type.name, column.type.enums) == (their_type.name, their_type.enums)


def test_upgrading_a_0001_database_derives_the_study_facts(tmp_path):
    """Studies written before the facts were stored get them: rungs from the stored budget (also
    for a non-integer reduction factor), baselines by the old report's rule, the main view."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    migrations.upgrade(engine, "0001_initial")
    now = dt.datetime(2025, 1, 1)
    config = {"epochs": 10, "grace_epochs": 2, "reduction_factor": 1.5, "baseline_arm": None}
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO bootstudy_studies (id, name, space, dataset, preset, command,"
                " config_json, status, created_at, code_version, package_versions, hardware)"
                " VALUES (1, 'old', 'data_fraction', 'fashion_mnist', 'cpu', 'run_study.py',"
                " :config, 'FINISHED', :now, 'abc', '{}', '{}')"
            ),
            {"config": json.dumps(config), "now": now},
        )
        for number, mode in enumerate(("vit", "shared")):
            connection.execute(
                sa.text(
                    "INSERT INTO bootstudy_trials (study_id, arm, arm_json, number, phase, status,"
                    " params_json, config_json, config_hash, seed, started_at) VALUES (1, :arm,"
                    " :factors, :number, 'search', 'COMPLETE', '{}', '{}', 'h', 0, :now)"
                ),
                {
                    "arm": f"mode={mode},data_fraction=0.1",
                    "factors": json.dumps({"mode": mode, "data_fraction": 0.1}),
                    "number": number,
                    "now": now,
                },
            )
    engine.dispose()
    with Store(url) as store:
        old = store.get_study("old")
    assert old.rungs == [2, 3, 5, 7]
    assert old.baselines == {
        "mode=vit,data_fraction=0.1": None,
        "mode=shared,data_fraction=0.1": "mode=vit,data_fraction=0.1",
    }
    assert old.main_view == "fraction_curve"


def test_open_existing_never_creates_a_database(tmp_path, storage_url):
    missing = tmp_path / "missing.db"
    with pytest.raises(StorageError, match="no SQLite database at"):
        Store.open_existing(f"sqlite:///{missing}")
    assert not missing.exists()
    make_engine(storage_url).dispose()  # a database, but without our tables
    with pytest.raises(StorageError, match="holds no bootstudy studies"):
        Store.open_existing(storage_url)
    with Store(storage_url) as store:
        _study(store)
    with Store.open_existing(storage_url) as store:
        assert [s.name for s in store.list_studies()] == ["sweep"]


# ---- URLs --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://x", "unsupported database URL 'foo://x': use sqlite:///"),
        ("not a url", "cannot parse database URL 'not a url'"),
        ("postgresql+psycopg2://u@h/db", "unsupported database URL"),
        ("sqlite://", "an in-memory SQLite database"),
        ("sqlite:///:memory:", "an in-memory SQLite database"),
        (
            "sqlite:////nonexistent/dir/x.db",
            "^cannot write the SQLite database at /nonexistent/dir/x.db: "
            "directory /nonexistent/dir does not exist$",
        ),
        ("sqlite:////etc/hostname/x.db", "/etc/hostname is not a directory$"),
    ],
)
def test_bad_urls_are_one_line_storage_errors(url, message):
    with pytest.raises(StorageError, match=message) as raised:
        make_engine(url)
    assert "\n" not in str(raised.value)


def test_unwritable_sqlite_directory(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root can write anywhere")
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    with pytest.raises(StorageError, match=f"directory {locked} is not writable"):
        make_engine(f"sqlite:///{locked}/x.db")


def test_sqlite_file_under_runs_gets_its_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_engine("sqlite:///runs/deep/er/study.db").dispose()
    assert (tmp_path / "runs/deep/er/study.db").is_file()
    with pytest.raises(StorageError, match="directory elsewhere does not exist"):
        make_engine("sqlite:///elsewhere/study.db")


def test_sqlite_connections_use_wal_busy_timeout_and_foreign_keys(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'study.db'}")
    with engine.connect() as connection:
        pragma = connection.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA busy_timeout").scalar() == 30_000
        assert pragma("PRAGMA foreign_keys").scalar() == 1
    engine.dispose()
    storage = optuna_storage(f"sqlite:///{tmp_path / 'study.db'}")
    with storage.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    storage.engine.dispose()


def test_closed_postgres_port_fails_fast_without_showing_the_password():
    started = time.monotonic()
    with pytest.raises(StorageError) as raised:
        make_engine("postgresql://bob:hunter2@127.0.0.1:1/study")
    assert time.monotonic() - started < 5
    message = str(raised.value)
    assert message.startswith("cannot connect to PostgreSQL at postgresql+psycopg://bob:***@")
    assert "Connection refused" in message and "hunter2" not in message and "\n" not in message


def test_missing_postgres_database_says_so(postgres_admin_url):
    url = sa.make_url(postgres_admin_url).set(database="bootstudy_no_such_database")
    with pytest.raises(
        StorageError,
        match='database "bootstudy_no_such_database" does not exist.*createdb -h 127.0.0.1',
    ):
        make_engine(url.render_as_string(hide_password=False))


def test_mask_password():
    assert mask_password("postgresql://bob:s3cr%40t@db:5432/x") == "postgresql://bob:***@db:5432/x"
    assert mask_password("postgresql://bob@db/x") == "postgresql://bob@db/x"
    assert mask_password("sqlite:///runs/study.db") == "sqlite:///runs/study.db"
    assert mask_password("::garbage::user:pw@host") == "host"


# ---- concurrency -------------------------------------------------------------------------------


def test_sqlite_reader_never_sees_database_is_locked(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    writer, reader = Store(url), Store(url)
    trial_id = _trial(writer, _study(writer).id)
    errors: list[BaseException] = []
    reads = 0
    done = threading.Event()

    def read_until_done() -> None:
        nonlocal reads
        while not done.is_set():
            try:
                reader.metrics_frame("sweep")
                reader.get_trial(trial_id)
                reads += 1
            except BaseException as exc:  # noqa: BLE001 - any failure is the finding
                errors.append(exc)
                return

    thread = threading.Thread(target=read_until_done)
    thread.start()
    try:
        for epoch in range(200):
            writer.record_epoch(trial_id, epoch, {"val_acc": epoch / 200, "train_loss": 1.0})
    finally:
        done.set()
        thread.join()
    assert errors == []
    assert reads > 0
    trial = writer.get_trial(trial_id)
    assert (trial.epochs_run, trial.best_val_acc) == (200, 199 / 200)
    assert len(reader.metrics_frame("sweep")) == 400
    writer.close()
    reader.close()


def test_code_version_is_git_describe():
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty", "--abbrev=12"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
    )
    expected = described.stdout.strip() if described.returncode == 0 else "unknown"
    assert collect(gpus=False)["code_version"] == expected


def test_a_lost_connection_is_told_apart_from_other_errors(postgres_admin_url):
    """What `reconnecting` retries: a connection the server ended (pg_terminate_backend), through
    SQLAlchemy's wrapping and our StorageError; not a constraint violation, and not an error
    raised `from None` (a loss during COMMIT: the write may have landed)."""
    from study.engine import connection_lost, reconnecting

    engine = sa.create_engine(normalize_url(postgres_admin_url))
    with engine.connect() as victim, engine.connect() as admin:
        pid = victim.exec_driver_sql("select pg_backend_pid()").scalar()
        admin.exec_driver_sql(f"select pg_terminate_backend({pid})")
        with pytest.raises(sa.exc.DBAPIError) as lost:
            victim.exec_driver_sql("select 1")
        with pytest.raises(sa.exc.DBAPIError) as violated:
            admin.exec_driver_sql("select 1/0")
    engine.dispose()
    assert connection_lost(lost.value)
    assert not connection_lost(violated.value)
    try:
        raise StorageError("could not write") from lost.value
    except StorageError as wrapped:
        assert connection_lost(wrapped)
    try:
        try:
            raise lost.value
        except sa.exc.DBAPIError:
            raise StorageError("lost while committing") from None
    except StorageError as committed:
        assert not connection_lost(committed)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise StorageError("could not write") from lost.value
        return "written"

    assert reconnecting(flaky) == "written" and len(calls) == 3


# ---- fencing: a driver taken over writes nothing ------------------------------------------------


def _always_gone(driver) -> bool:
    return False


def test_a_taken_over_driver_can_write_nothing_ours_or_optunas(store, storage_url):
    from study.store import FIRST_GENERATION, LeaseLost

    study = store.create_study(
        "sweep", "data_fraction", "fashion_mnist", "smoke", "c", {}, PROVENANCE, driver=("a", 1)
    )
    store.fence(study.id, FIRST_GENERATION)
    storage = optuna_storage(storage_url)
    store.fence_optuna(storage)
    optuna_study = optuna.create_study(study_name="sweep/a", storage=storage)
    asked = optuna_study.ask()  # fenced writes pass while the lease is ours
    running = _trial(store, study.id)
    store.record_epoch(running, 1, {"val_acc": 0.5})
    with Store(storage_url) as other:  # a --resume elsewhere, once our heartbeat went stale
        claimed = other.claim_driver("sweep", "b", 2, _always_gone)
        assert (claimed.host, claimed.pid, claimed.generation) == ("b", 2, FIRST_GENERATION + 1)
        before = other.trials_frame("sweep")
        writes = [
            lambda: _trial(store, study.id),
            lambda: store.record_epoch(running, 2, {"val_acc": 0.6}),
            lambda: store.finish_trial(running, "PRUNED"),
            lambda: store.mark_stale_running(study.id),
            lambda: store.set_study_status("sweep", "FINISHED"),
            lambda: store.beat(study.id, "a", 1),
            lambda: store.release_driver(study.id, "a", 1),
            lambda: optuna_study.ask(),
            lambda: optuna_study.tell(asked, 0.5),
        ]
        for write in writes:
            with pytest.raises(LeaseLost, match="this driver lost study 'sweep'.*host b, pid 2"):
                write()
        assert store.fenced_out
        pd.testing.assert_frame_equal(other.trials_frame("sweep"), before)
        assert other.count_metrics(study.id) == 1
        assert other.get_study("sweep").status == "RUNNING"
        states = [
            t.state for t in optuna.load_study(study_name="sweep/a", storage=storage_url).trials
        ]
        assert states == [optuna.trial.TrialState.RUNNING]  # the ask before; nothing after
        other.fence(study.id, claimed.generation)  # the new driver writes as before
        other.finish_trial(running, "FAILED", error="stale")
    storage.engine.dispose()


def test_a_claim_waits_for_a_fenced_write_in_flight(store, storage_url):
    """The check holds to COMMIT: a claim cannot land between a write's check and the write."""
    from study.store import FIRST_GENERATION

    study = store.create_study(
        "sweep", "data_fraction", "fashion_mnist", "smoke", "c", {}, PROVENANCE, driver=("a", 1)
    )
    store.fence(study.id, FIRST_GENERATION)
    claimed = []
    with Store(storage_url) as other:
        with store._writing("hold a write open") as session:  # checked, not yet committed
            claim = threading.Thread(
                target=lambda: claimed.append(other.claim_driver("sweep", "b", 2, _always_gone))
            )
            claim.start()
            claim.join(1.0)
            assert claim.is_alive() and not claimed  # waits for the write's row lock
            session.execute(sa.text("SELECT 1"))
        claim.join(30)
        assert claimed and claimed[0].generation == FIRST_GENERATION + 1
