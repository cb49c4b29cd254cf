"""Ctrl-C and SIGTERM: the study stops, says how to resume, and resumes to the full budget.

Before: Ray Tune swallowed SIGINT, the driver exited 0, the study was FINISHED and its running
trials stayed RUNNING forever.
"""

from __future__ import annotations

import signal
import time

import pytest
from conftest import Driver, wait_for

from study.audit import audit_study, completed_results
from study.store import Store


def _counts(storage: str, name: str) -> dict[str, int]:
    with Store(storage) as store:
        frame = store.trials_frame(name)
    return {str(k): int(v) for k, v in frame["status"].value_counts().items()}


def _mid_study(storage: str, name: str) -> bool:
    """Some trials completed, others running with an epoch in."""
    with Store(storage) as store:
        frame = store.trials_frame(name)
    running = frame[frame["status"] == "RUNNING"]
    return (frame["status"] == "COMPLETE").sum() >= 1 and (running["epochs_run"] >= 1).any()


@pytest.mark.parametrize(
    "signum, group",
    [(signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c-to-the-process-group", "sigterm-to-the-driver"],
)
def test_a_signal_stops_the_study_consistently_and_resume_finishes_it(
    storage_url, tmp_path, signum, group
):
    driver = Driver(storage_url, tmp_path, "s", "--seconds-per-epoch", "0.6")
    wait_for(lambda: _mid_study(storage_url, "s"), what="trials to complete and run")
    with Store(storage_url) as store:
        before = completed_results(store, "s")
    driver.signal(signum, group=group)
    code, out, err = driver.wait()
    assert code == 128 + signum, err[-3000:]  # 130 for SIGINT, 143 for SIGTERM
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: study 's' stopped by " + signal.Signals(signum).name)
    assert "--resume" in last and "Traceback" not in err
    with Store(storage_url) as store:
        assert store.get_study("s").status == "INTERRUPTED"
        after = completed_results(store, "s")
    counts = _counts(storage_url, "s")
    assert "RUNNING" not in counts
    assert counts.get("INTERRUPTED", 0) + counts.get("COMPLETE", 0) == sum(counts.values())
    assert all(after[i] == before[i] for i in before)  # nothing completed is lost or changed
    audit = audit_study(storage_url, "s")
    assert audit.ok, (audit.duplicates, audit.problems)

    resumed = Driver(storage_url, tmp_path, "s", "--resume", "--seconds-per-epoch", "0")
    code, out, err = resumed.wait()
    assert code == 0, err[-3000:]
    with Store(storage_url) as store:
        assert store.get_study("s").status == "FINISHED"
        final = completed_results(store, "s")
    assert all(final[i] == after[i] for i in after)
    counts = _counts(storage_url, "s")
    assert counts["COMPLETE"] == 6  # 2 arms x 3 trials, each exactly once
    audit = audit_study(storage_url, "s")
    assert audit.ok, (audit.duplicates, audit.problems)


def test_a_second_ctrl_c_stops_at_once_and_still_consistent(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    # 60 s epochs: the first Ctrl-C alone would wait out the grace period (8 s) and more.
    driver = Driver(storage, tmp_path, "s", "--seconds-per-epoch", "60", "--trials", "2")
    wait_for(lambda: _counts(storage, "s").get("RUNNING", 0) == 2, what="two running trials")
    driver.signal(signal.SIGINT, group=True)
    time.sleep(1.0)
    started = time.monotonic()
    driver.signal(signal.SIGINT, group=True)
    code, _, err = driver.wait()
    assert time.monotonic() - started < 19  # neither the epoch nor the grace period
    assert code == 130, err[-3000:]
    assert "again: stopping now" in err and "Traceback" not in err
    assert _counts(storage, "s") == {"INTERRUPTED": 2}
    audit = audit_study(storage, "s")
    assert audit.ok, (audit.duplicates, audit.problems)
