"""PostgreSQL connections dropped under a running study (a server failover, an admin's
pg_terminate_backend, a NAT timeout): the study finishes with nothing lost or duplicated."""

from __future__ import annotations

import threading

import psycopg
import sqlalchemy as sa
from conftest import Driver

from study.audit import audit_study
from study.store import Store


def _terminate_backends(admin_url: str, database: str, stop: threading.Event, killed: list) -> None:
    """Every 0.3 s, end every connection to `database` (the driver's, Optuna's, whichever)."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        while not stop.wait(0.3):
            rows = admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where datname = %s and pid <> pg_backend_pid()",
                (database,),
            ).fetchall()
            killed.append(sum(1 for (ok,) in rows if ok))


def test_a_study_survives_its_connections_being_dropped_again_and_again(storage_url, tmp_path):
    if not storage_url.startswith("postgresql"):
        return  # SQLite has no connections to drop
    database = sa.make_url(storage_url).database
    admin = sa.make_url(storage_url).set(database="postgres").render_as_string(False)
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_terminate_backends, args=(admin, database, stop, killed))
    driver = Driver(storage_url, tmp_path, "s", "--seconds-per-epoch", "0.3", "--final-seeds", "1")
    killer.start()
    try:
        code, out, err = driver.wait(timeout=300)
    finally:
        stop.set()
        killer.join()
    assert sum(killed) >= 5, (killed, code, err[-2000:])  # the drops really happened, mid-study
    assert code == 0, err[-3000:]
    with Store(storage_url) as store:
        trials = store.trials_frame("s")
        assert store.get_study("s").status == "FINISHED"
    done = trials[trials["status"] == "COMPLETE"]
    assert len(done[done["phase"] == "search"]) == 6 and len(done[done["phase"] == "final"]) == 2
    audit = audit_study(storage_url, "s")
    assert audit.ok, (audit.duplicates, audit.problems)
