"""A damaged database is one line, never a page of tracebacks; a study it stops is INTERRUPTED.

Before: a dropped `bootstudy_trial_metrics` table gave exit 1, 382 lines and 14 tracebacks, the
new study FAILED with a trial RUNNING; a database failing past its retries mid-study (a full
disk, an outage longer than the retry window) left the study and its trials RUNNING, and the last
line named the lease release, not the cause.
"""

from __future__ import annotations

import sqlite3

from conftest import Driver, wait_for

from study.store import Store


def _drop_metrics(path) -> None:
    with sqlite3.connect(path, timeout=30) as connection:
        connection.execute("DROP TABLE bootstudy_trial_metrics")


def test_a_missing_table_is_one_line_before_anything_runs(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    with Store(storage) as store:
        store.create_study("old", "data_fraction", "fashion_mnist", "smoke", "c", {}, {})
    _drop_metrics(tmp_path / "s.db")
    code, _, err = Driver(storage, tmp_path, "new", "--seconds-per-epoch", "0").wait()
    assert code == 2, err[-3000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "damaged: table bootstudy_trial_metrics is missing" in lines[0]
    assert "restore the database from a copy" in lines[0]


def test_a_table_dropped_mid_study_stops_it_in_one_line_interrupted(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    driver = Driver(storage, tmp_path, "s", "--seconds-per-epoch", "1", "--trials", "2")

    def running() -> bool:
        with Store(storage) as store:
            frame = store.trials_frame("s")
        return bool(((frame["status"] == "RUNNING") & (frame["epochs_run"] >= 1)).any())

    wait_for(running, what="a trial an epoch in")
    _drop_metrics(tmp_path / "s.db")
    code, _, err = driver.wait(timeout=180)
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert "no such table: bootstudy_trial_metrics" in last, last
    assert "the study stopped: its finished trials are safe" in last and "--resume" in last
    with sqlite3.connect(tmp_path / "s.db") as connection:  # the store refuses to open it now
        (status,) = connection.execute("SELECT status FROM bootstudy_studies").fetchone()
        trials = dict(
            connection.execute("SELECT status, count(*) FROM bootstudy_trials GROUP BY status")
        )
    assert status == "INTERRUPTED"
    assert "RUNNING" not in trials, trials
