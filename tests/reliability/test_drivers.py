"""Two drivers, one study: `--resume` while the first driver lives is refused in one line.

Before: no lock or liveness check; the second driver marked the first one's running trials stale,
and the two then wrote the same trials (UNIQUE failures, UpdateFinishedTrialError, our tables and
Optuna's disagreeing for good).
"""

from __future__ import annotations

from conftest import Driver, wait_for

from study.audit import audit_study
from study.store import Store


def _running(storage: str) -> int:
    with Store(storage) as store:
        return int((store.trials_frame("s")["status"] == "RUNNING").sum())


def test_resume_while_the_driver_lives_is_refused_naming_it(storage_url, tmp_path):
    first = Driver(storage_url, tmp_path, "s", "--seconds-per-epoch", "3", "--trials", "2")
    wait_for(lambda: _running(storage_url) == 2, what="two running trials")
    code, _, err = Driver(storage_url, tmp_path, "s", "--resume").wait()
    assert code == 2, err[-2000:]
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"pid {first.proc.pid}" in lines[0] and "host " in lines[0]
    assert "last heartbeat" in lines[0]
    with Store(storage_url) as store:  # the refused driver touched nothing of the live one's
        trials = store.trials_frame("s")
        assert store.get_study("s").status == "RUNNING"
    assert not trials["error"].fillna("").str.startswith("stale").any()
    assert set(trials["status"]) <= {"RUNNING", "COMPLETE"}

    first.kill()  # SIGKILL: its pid is gone at once, so the study may be resumed at once
    first.wait()
    code, _, err = Driver(storage_url, tmp_path, "s", "--resume", "--seconds-per-epoch", "0").wait()
    assert code == 0, err[-2000:]
    audit = audit_study(storage_url, "s")
    assert audit.ok, (audit.duplicates, audit.problems)
    with Store(storage_url) as store:
        assert (store.trials_frame("s")["status"] == "COMPLETE").sum() == 4


def test_a_stale_heartbeat_is_taken_over(tmp_path):
    """A driver on another host that stopped beating a minute ago no longer holds the study."""
    import datetime as dt

    import sqlalchemy as sa

    from study import lease

    storage = f"sqlite:///{tmp_path / 's.db'}"
    with Store(storage) as store:
        study = store.create_study(
            "s", "data_fraction", "fashion_mnist", "smoke", "test", {}, {}, driver=("elsewhere", 1)
        )
        try:
            lease.Lease.claim(store, "s", study.id)
            raise AssertionError("a fresh remote heartbeat must hold the study")
        except lease.DriverAlive as err:
            assert "host elsewhere, pid 1" in str(err)
        old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=lease.STALE_SECONDS + 1)
        with store.engine.begin() as connection:
            connection.execute(
                sa.text("UPDATE bootstudy_studies SET heartbeat_at = :t"), {"t": old.isoformat()}
            )
        claimed = lease.Lease.claim(store, "s", study.id)
        claimed.release()
