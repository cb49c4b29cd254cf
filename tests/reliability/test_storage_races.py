"""Schema creation under concurrency, and a schema upgrade that keeps every row.

Before: four drivers opening one fresh database at once raced in Optuna's table creation ("table
studies already exists" on SQLite, a duplicate pg_type key on PostgreSQL) and all but one failed.
"""

from __future__ import annotations

import multiprocessing

import optuna
import sqlalchemy as sa

from study import migrations
from study.engine import make_engine, optuna_storage
from study.store import Store


def _open_and_create(url: str, index: int, start, results) -> None:
    start.wait()
    try:
        with Store(url):
            pass
        storage = optuna_storage(url)
        optuna.create_study(study_name=f"s{index}", storage=storage)
        results.put("ok")
    except Exception as exc:  # the test prints what failed
        results.put(f"{type(exc).__name__}: {exc}")


def test_four_drivers_open_one_fresh_database_at_once(storage_url):
    context = multiprocessing.get_context("fork")
    start, results = context.Event(), context.Queue()
    children = [
        context.Process(target=_open_and_create, args=(storage_url, i, start, results))
        for i in range(4)
    ]
    for child in children:
        child.start()
    start.set()
    for child in children:
        child.join(timeout=120)
    outcomes = [results.get(timeout=5) for _ in children]
    assert outcomes == ["ok"] * 4, outcomes
    storage = optuna_storage(storage_url)
    assert sorted(s.study_name for s in storage.get_all_studies()) == [
        "s0",
        "s1",
        "s2",
        "s3",
    ]
    assert storage.get_current_version() == storage.get_head_version()


def test_upgrading_a_first_schema_database_keeps_every_trial_and_metric(tmp_path):
    """The INTERRUPTED migration rebuilds bootstudy_trials on SQLite: with foreign keys on, the
    DROP of the old table would have cascaded into every metric row."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = make_engine(url)
    migrations.upgrade(engine, "0001_initial")
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO bootstudy_studies (id, name, space, dataset, preset, command, "
                "config_json, status, created_at, code_version, package_versions, hardware) VALUES "
                "(1, 's', 'data_fraction', 'fashion_mnist', 'smoke', 'c', '{}', 'FINISHED', "
                "'2026-01-01 00:00:00', 'v', '{}', '{}')"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO bootstudy_trials (id, study_id, arm, arm_json, number, phase, status, "
                "params_json, config_json, config_hash, seed, epochs_run, started_at) VALUES "
                "(1, 1, 'a', '{}', 0, 'search', 'COMPLETE', '{}', '{}', 'h', 0, 2, "
                "'2026-01-01 00:00:00')"
            )
        )
        for epoch in (1, 2):
            connection.execute(
                sa.text("INSERT INTO bootstudy_trial_metrics VALUES (1, :e, 'val_acc', :v)"),
                {"e": epoch, "v": 0.1 * epoch},
            )
    engine.dispose()
    with Store(url) as store:
        assert migrations.current_revision(store.engine) == migrations.head_revision()
        assert store.metrics_frame("s")["value"].tolist() == [0.1, 0.2]
        trial = store.trials_frame("s").iloc[0]
        assert trial["status"] == "COMPLETE" and trial["epochs_run"] == 2
        study = store.get_study("s")
        trial_id = store.start_trial(study.id, "a", {}, 1, "search", {}, {}, "h2", 0)
        store.finish_trial(trial_id, "INTERRUPTED")  # the new status is admitted
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA foreign_key_check").all() == []
