"""The reliability suite: real drivers killed, interrupted and starved, then the study audited.

Every test here is marked `reliability` (run by `make test-reliability` and CI, not by `make
test`). Drivers are subprocesses (`driver.py`) with stand-in trainers, so a fault can be timed to
an epoch; after each fault, `study.audit` checks our tables against Optuna's trial by trial.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("driver.py")


def run_study_cli(argv: list[str]) -> tuple[int, str]:
    """`run_study.py argv` in this process, as its console script runs it: (exit code, stderr)."""
    import contextlib
    import io

    import run_study
    from trainers.cli import run_cli

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        with pytest.raises(SystemExit) as exited:
            run_cli(run_study.main, argv)
    return exited.value.code, err.getvalue()


def one_trial_study(url: str, name: str = "s") -> None:
    """A stored study of one completed search trial (3 epochs), for the report's writers."""
    import numpy as np

    from reports.synthetic import write_study

    trial = {
        "arm_json": {"mode": "vit", "data_fraction": 0.1}, "phase": "search",
        "status": "COMPLETE", "params": {}, "seed": 0, "epochs_run": 3,
        "best_val_acc": 0.6, "final_val_acc": 0.6, "test_acc": None, "trial_seconds": 4.0,
        "curves": {"val_acc": np.linspace(0.3, 0.6, 3)},
    }  # fmt: skip
    write_study(url, name, [trial], space="data_fraction", config={"epochs": 3})


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.reliability)


class Driver:
    """A study driver in its own process group (as a shell job is), killed and awaited by tests."""

    def __init__(self, storage: str, results: Path, name: str, *args: str):
        self.log = results / f"{name}-{time.monotonic_ns()}.log"
        self.proc = subprocess.Popen(
            [sys.executable, str(DRIVER), storage, str(results), name, *args],
            cwd=REPO,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
        )

    def signal(self, signum: int, group: bool = False) -> None:
        (os.killpg if group else os.kill)(self.proc.pid, signum)

    def kill(self) -> None:
        """SIGKILL the driver alone, as the OOM killer or `kill -9 PID` would."""
        self.signal(signal.SIGKILL)

    def wait(self, timeout: float = 240) -> tuple[int, str, str]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.returncode, out, self.log.read_text()


def wait_for(predicate, timeout: float = 120, what: str = "the driver to get there") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # tables not created yet, database busy: look again
            pass
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")
