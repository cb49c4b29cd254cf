"""A driver paused past its lease, taken over by `--resume`, then woken, never writes again.

Before: the woken driver went on writing (it rewrote a trial the new driver had marked FAILED back
to PRUNED, then died on `UNIQUE constraint failed: bootstudy_trials.study_id, ...number`), and the
audit found our trial PRUNED, Optuna's FAIL, their curves different. `Lease.lost` was set when the
heartbeat was taken over, but nothing read it. Now each claim bumps a lease generation that every
write checks inside its own transaction (ours and Optuna's).
"""

from __future__ import annotations

import signal
import time

from conftest import Driver, wait_for

from study.audit import audit_study
from study.store import Store

LEASE_SECONDS = 3  # BOOTSTUDY_LEASE_SECONDS for both drivers: a stale heartbeat in 3 s, not 60


def _running_with_an_epoch(storage: str) -> bool:
    with Store(storage) as store:
        frame = store.trials_frame("s")
    running = frame[frame["status"] == "RUNNING"]
    return len(running) == 2 and bool((running["epochs_run"] >= 1).all())


def test_a_driver_woken_after_a_takeover_writes_nothing_and_says_so(
    storage_url, tmp_path, monkeypatch
):
    monkeypatch.setenv("BOOTSTUDY_LEASE_SECONDS", str(LEASE_SECONDS))
    first = Driver(storage_url, tmp_path, "s", "--seconds-per-epoch", "1.5", "--trials", "2")
    wait_for(lambda: _running_with_an_epoch(storage_url), what="two trials an epoch in")
    first.signal(signal.SIGSTOP)  # a laptop lid, a stopped container, a long GC pause
    time.sleep(LEASE_SECONDS + 2)  # its heartbeat goes stale; its Ray workers train on
    with Store(storage_url) as store:
        paused = store.trials_frame("s").set_index("id")[["status", "epochs_run"]]

    second = Driver(storage_url, tmp_path, "s", "--resume", "--seconds-per-epoch", "0")
    code, out, err = second.wait()
    assert code == 0, err[-3000:]
    with Store(storage_url) as store:
        taken_over = store.trials_frame("s").set_index("id")
        metrics = store.count_metrics(store.get_study("s").id)
    assert set(taken_over.loc[paused.index, "status"]) == {"FAILED"}  # stale: the first's
    assert (taken_over["status"] == "COMPLETE").sum() == 4

    first.signal(signal.SIGCONT)
    code, out, err = first.wait(timeout=180)
    assert code == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: this driver lost study 's': it was taken over"), last

    with Store(storage_url) as store:  # the woken driver changed nothing at all
        after = store.trials_frame("s").set_index("id")
        assert store.count_metrics(store.get_study("s").id) == metrics
        assert store.get_study("s").status == "FINISHED"
    assert after.equals(taken_over)
    audit = audit_study(storage_url, "s")
    assert audit.ok, (audit.duplicates, audit.problems)
