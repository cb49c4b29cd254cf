#!/usr/bin/env python
"""Chaos: kill, interrupt and feed garbage to real study drivers, then count what was lost.

Each scenario runs a small study (stand-in trainers, real Ray, real SQLite or PostgreSQL) through
`tests/reliability/driver.py`, does damage at a chosen point, resumes until the study finishes,
and audits it (`study.audit`): completed results before the damage against after (rows lost),
results recorded twice (duplicates), our tables against Optuna's trial by trial.

    python bench/chaos.py                         # SQLite in a temporary directory
    python bench/chaos.py --storage postgresql://postgres@127.0.0.1:5432/chaos

The last lines are the figures the README quotes; rows lost and duplicates must be 0.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from study.audit import audit_study, completed_results  # noqa: E402
from study.store import Store  # noqa: E402

DRIVER = REPO / "tests" / "reliability" / "driver.py"

# name, when to strike (a predicate on the trials frame), the signal, extra driver options
KILLS = [
    (
        "SIGKILL before the first trial ends",
        lambda t: _n(t, "RUNNING") and not _n(t, "COMPLETE"),
        signal.SIGKILL,
        (),
    ),
    (
        "SIGKILL mid-search",
        lambda t: _n(t, "COMPLETE") >= 2 and _n(t, "RUNNING"),
        signal.SIGKILL,
        (),
    ),
    (
        "SIGKILL during the final seeds",
        lambda t: _n(t[t["phase"] == "final"], "RUNNING"),
        signal.SIGKILL,
        ("--final-seeds", "2"),
    ),
    ("SIGINT mid-search", lambda t: _n(t, "COMPLETE") >= 2 and _n(t, "RUNNING"), signal.SIGINT, ()),
    (
        "SIGTERM mid-search",
        lambda t: _n(t, "COMPLETE") >= 2 and _n(t, "RUNNING"),
        signal.SIGTERM,
        (),
    ),
]
# name, stand-in trainer, extra driver options
TIMEOUT = ("--extra", "trial_timeout=12")
FAULTS = [
    ("a trial that raises", "raising", ()),
    ("a NaN loss", "nan", ()),
    ("a trial stuck in Python past --trial-timeout", "spinning", TIMEOUT),
    ("a trial stuck in one C call past --trial-timeout", "hanging", TIMEOUT),
]
BAD_INPUTS = [
    ["--trials", "0"], ["--epochs", "-1"], ["--cpus-per-trial", "nan"], ["--gpus-per-trial", "-1"],
    ["--reduction-factor", "1"], ["--study", ""], ["--study", "a/b"], ["--address", "nohost"],
    ["--address", "h:70000"], ["--storage", "foo://x"], ["--storage", "sqlite:///:memory:"],
    ["--set", "seed=1"], ["--set", "no_such=1"], ["--arm", "data_fraction=0"],
    ["--arm", "mode=nope"], ["--preset", "huge"], ["--space", "nope"], ["--trials", "two"],
    ["--trial-timeout", "0"], ["--trial-timeout", "inf"],
]  # fmt: skip


def _n(trials, status: str) -> int:
    return int((trials["status"] == status).sum())


def _driver(storage: str, results: Path, name: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(DRIVER), storage, str(results), name, *args],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _trials(storage: str, name: str):
    with Store(storage) as store:
        return store.trials_frame(name)


def _strike(storage, results, name, when, signum, extra) -> tuple[bool, dict]:
    """Run a driver, strike when `when` holds, return (struck, completed results before)."""
    proc = _driver(storage, results, name, "--seconds-per-epoch", "0.6", *extra)
    before: dict = {}
    deadline = time.monotonic() + 240
    struck = False
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            trials = _trials(storage, name)
        except Exception:  # not created yet
            continue
        if when(trials):
            with Store(storage) as store:
                before = completed_results(store, name)
            os.killpg(proc.pid, signum) if signum == signal.SIGINT else os.kill(proc.pid, signum)
            struck = True
            break
    try:
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    if signum == signal.SIGKILL:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the Ray it started, as job control would
    return struck, before


def _finish(storage, results, name, *extra) -> int:
    proc = _driver(storage, results, name, "--resume", "--seconds-per-epoch", "0", *extra)
    return proc.wait(timeout=600)


def _bad_inputs(tmp: Path) -> tuple[int, int]:
    import run_study
    from trainers.cli import run_cli

    refused = 0
    for argv in BAD_INPUTS:
        err = io.StringIO()
        full = ["--space", "data_fraction", "--preset", "smoke", "--dry-run",
                "--storage", f"sqlite:///{tmp / 'bad.db'}", *argv]  # fmt: skip
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                run_cli(run_study.main, full)
            except SystemExit as exit_:
                code = exit_.code
        lines = err.getvalue().strip().splitlines()
        ok = code == 2 and len(lines) == 1 and "Traceback" not in err.getvalue()
        refused += ok and not (tmp / "bad.db").exists()
        if not ok:
            print(f"  bad input not refused cleanly: {argv}: {err.getvalue()[-300:]}")
    return len(BAD_INPUTS), refused


@contextlib.contextmanager
def _dropping_connections(storage: str):
    """pg_terminate_backend on every connection to the study's database, every 0.3 s; yields the
    list of how many each round ended."""
    import threading

    import psycopg
    import sqlalchemy as sa

    url = sa.make_url(storage)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(False)
    stop, drops = threading.Event(), []

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as connection:
            while not stop.wait(0.3):
                rows = connection.execute(
                    "select pg_terminate_backend(pid) from pg_stat_activity "
                    "where datname = %s and pid <> pg_backend_pid()",
                    (url.database,),
                ).fetchall()
                drops.append(sum(1 for (ok,) in rows if ok))

    thread = threading.Thread(target=drop, daemon=True)
    thread.start()
    try:
        yield drops
    finally:
        stop.set()
        thread.join()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--storage", help="a database URL (default: SQLite in a temporary directory)")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bootstudy-chaos-"))
    storage = args.storage or f"sqlite:///{tmp / 'chaos.db'}"
    survived = injected = recorded = lost = duplicates = disagreements = 0
    started = time.monotonic()
    for i, (what, when, signum, extra) in enumerate(KILLS):
        name = f"chaos-kill-{i}"
        # Its own seed: identical configs of earlier scenarios would be REUSED, not run.
        extra = (*extra, "--extra", f"seed={i + 1}")
        struck, before = _strike(storage, tmp, name, when, signum, extra)
        code = _finish(storage, tmp, name, *extra)
        with Store(storage) as store:
            after = completed_results(store, name)
        audit = audit_study(storage, name)
        gone = sum(1 for k, v in before.items() if after.get(k) != v)
        lost += gone
        duplicates += len(audit.duplicates)
        disagreements += len(audit.problems)
        survived += struck and code == 0 and audit.ok and not gone
        print(f"{what}: struck={struck}, resume exit {code}, {audit.completed} completed, "
              f"lost {gone}, duplicates {len(audit.duplicates)}, problems {len(audit.problems)}",
              flush=True)  # fmt: skip
    faults = list(FAULTS)
    if storage.startswith("postgresql"):
        faults.append(
            ("every connection dropped every 0.3 s", "curve", ("--seconds-per-epoch", "0.3"))
        )
    for i, (what, trainer, extra) in enumerate(faults):
        name = f"chaos-fault-{i}"
        seed = ("--extra", f"seed={100 + i}", "--trials", "4", "--modes", "vit")
        options = ("--trainer", trainer, "--seconds-per-epoch", "0", *seed, *extra)
        dropping = trainer == "curve"
        with _dropping_connections(storage) if dropping else contextlib.nullcontext() as drops:
            proc = _driver(storage, tmp, name, *options)
            code = proc.wait(timeout=600)
        trials = _trials(storage, name)
        failed = trials[trials["status"] == "FAILED"]
        audit = audit_study(storage, name)
        if dropping:  # the fault is the drops; every trial must still complete
            injected += sum(drops) > 0
            recorded += sum(drops) > 0 and code == 0 and audit.ok and _n(trials, "COMPLETE") == 4
            detail = f"{sum(drops)} connections dropped"
        else:
            injected += len(failed) > 0
            recorded += (
                bool(len(failed)) and failed["error"].notna().all() and code == 0 and audit.ok
            )
            detail = f"{len(failed)} FAILED with their errors"
        duplicates += len(audit.duplicates)
        disagreements += len(audit.problems)
        print(f"{what}: exit {code}, {detail}, {_n(trials, 'COMPLETE')} COMPLETE, "
              f"audit ok={audit.ok}", flush=True)  # fmt: skip
    tried, refused = _bad_inputs(tmp)
    print(f"({(time.monotonic() - started) / 60:.1f} min, storage {storage.split('://')[0]})")
    print(f"kills survived: {survived}/{len(KILLS)}")
    print(f"faults injected and recorded: {recorded}/{len(faults)} (injected {injected})")
    print(f"bad inputs tried: {tried}, refused in one line with exit 2: {refused}")
    print(f"disagreements with Optuna: {disagreements}")
    print(f"rows lost: {lost}")
    print(f"duplicates: {duplicates}")


if __name__ == "__main__":
    main()
