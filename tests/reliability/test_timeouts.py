"""Trials that never end and drivers that die: `--trial-timeout`, and workers that do not outlive
the driver that started them (study/watchdog.py)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from conftest import Driver, wait_for

from study.audit import audit_study
from study.store import Store


def _trials(storage: str):
    with Store(storage) as store:
        return store.trials_frame("s")


@pytest.mark.parametrize("trainer", ["spinning", "hanging"])
def test_trial_timeout_fails_the_stuck_trials_keeps_their_epochs_and_finishes(tmp_path, trainer):
    """spinning: stuck in Python, so TrialTimeout is raised in it; hanging: stuck in one C call,
    so its worker ends itself after the grace and the driver records the timeout. 12 s: a loaded
    machine takes seconds to import torch in a fresh worker, and that counts too."""
    storage = f"sqlite:///{tmp_path / 's.db'}"
    code, out, err = Driver(
        storage, tmp_path, "s", "--trainer", trainer, "--seconds-per-epoch", "0", "--trials", "4",
        "--modes", "vit", "--extra", "trial_timeout=12",
    ).wait(timeout=300)  # fmt: skip
    assert code == 0, err[-3000:]
    trials = _trials(storage)
    failed = trials[trials["status"] == "FAILED"]
    assert len(failed) >= 1  # TPE's first trials are random: some land in the faulty corner
    assert failed["error"].str.contains("ran longer than --trial-timeout 12 s").all()
    assert (failed["epochs_run"] == 1).all()  # the epoch it finished is kept
    assert (trials["status"].isin(["COMPLETE", "FAILED"])).all()
    assert (trials[trials["status"] == "COMPLETE"]["epochs_run"] == 4).all()
    with Store(storage) as store:
        assert store.get_study("s").status == "FINISHED"
    audit = audit_study(storage, "s")
    assert audit.ok, (audit.duplicates, audit.problems)


def test_a_bad_trial_timeout_is_one_line_and_exit_2(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    code, out, err = Driver(storage, tmp_path, "s", "--extra", "trial_timeout=0").wait()
    assert code == 2
    assert err.strip().splitlines() == [
        "error: --trial-timeout must be a positive number of seconds, at most 2,592,000 (30 "
        "days), got 0"
    ]
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize("group", [False, True], ids=["driver-alone", "driver-and-its-ray"])
def test_workers_end_within_seconds_of_a_sigkilled_driver(tmp_path, group):
    """They used to train on for 1-2 minutes, holding the CPUs (and GPUs) a resume needs."""
    pids = tmp_path / "pids"
    pids.mkdir()
    storage = f"sqlite:///{tmp_path / 's.db'}"
    driver = Driver(
        storage, tmp_path, "s", "--seconds-per-epoch", "1", "--epochs", "60", "--pid-dir",
        str(pids),
    )  # fmt: skip
    try:
        wait_for(lambda: len(list(pids.iterdir())) >= 2, timeout=180, what="two trials to run")
        workers = [int(p.name) for p in pids.iterdir()]
        # alone: `kill -9 PID`, the OOM killer; group: `kill -9 %1` of a shell job, which takes
        # Ray's own processes (raylet, GCS) with it and leaves the workers nobody to tell them
        driver.signal(signal.SIGKILL, group=group)
        killed = time.monotonic()
        deadline = killed + 15
        while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
            time.sleep(0.2)
        survivors = [pid for pid in workers if _alive(pid)]
        assert survivors == [], f"workers {survivors} still run 15 s after their driver died"
        print(f"workers gone {time.monotonic() - killed:.1f} s after the driver's SIGKILL")
    finally:
        try:
            os.killpg(driver.proc.pid, signal.SIGKILL)  # whatever else Ray left
        except ProcessLookupError:
            pass
        driver.proc.wait()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not yet reaped by its parent) is gone for our purposes
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False
