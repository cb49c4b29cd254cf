"""SIGTERM or SIGINT to the driver's whole process group (what `timeout`, systemd, Kubernetes and a
terminal's Ctrl-C send) ends the study within 20 s, even with trials mid-epoch: exit 143 for TERM,
130 for INT, the study INTERRUPTED, no RUNNING row in ours or Optuna's.

Before: SIGTERM to the group also reached the local Ray's own processes (GCS, raylet, workers),
and the driver printed "SIGTERM: no new trials..." then, 61 s later, "Failed to connect to GCS
within 60 seconds ... The program will terminate": exit 1, the study and 2 trials RUNNING. SIGINT
took 35 s (a 20 s grace, then Tune's own 15 s wait for the trials).
"""

from __future__ import annotations

import signal
import time

import pytest
from conftest import Driver, wait_for

from study.audit import audit_study
from study.store import Store

DEADLINE_SECONDS = 20  # the promise: under Kubernetes' 30 s grace, with room to spare


def _counts(storage: str) -> dict[str, int]:
    with Store(storage) as store:
        frame = store.trials_frame("s")
    return {str(k): int(v) for k, v in frame["status"].value_counts().items()}


@pytest.mark.parametrize(
    "signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["sigterm", "sigint"]
)
def test_a_signal_to_the_whole_group_mid_epoch_ends_the_study_in_time(tmp_path, signum, code):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    # 120 s epochs: every trial is mid-epoch when the signal comes, and stays so
    driver = Driver(storage, tmp_path, "s", "--seconds-per-epoch", "120", "--trials", "2")
    wait_for(lambda: _counts(storage).get("RUNNING", 0) == 2, what="two running trials")
    time.sleep(2)  # into the epoch
    started = time.monotonic()
    driver.signal(signum, group=True)
    returncode, _, err = driver.wait(timeout=150)
    seconds = time.monotonic() - started
    print(f"{signal.Signals(signum).name} to the group: exit {returncode} after {seconds:.1f} s")
    assert returncode == code, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"interrupted: study 's' stopped by {signal.Signals(signum).name}")
    assert seconds < DEADLINE_SECONDS, err[-3000:]
    with Store(storage) as store:
        assert store.get_study("s").status == "INTERRUPTED"
    assert _counts(storage) == {"INTERRUPTED": 2}
    audit = audit_study(storage, "s")  # no Optuna trial RUNNING either
    assert audit.ok, (audit.duplicates, audit.problems)
