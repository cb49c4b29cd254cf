#!/usr/bin/env python
"""Chaos: kill, interrupt and feed garbage to real study drivers, then count what was lost.

Each scenario runs a small study (stand-in trainers, real Ray, real SQLite or PostgreSQL) through
`tests/reliability/driver.py`, does damage at a chosen point, resumes until the study finishes,
and audits it (`study.audit`): completed results before the damage against after (rows lost),
results recorded twice (duplicates), our tables against Optuna's trial by trial.

    python bench/chaos.py                         # SQLite in a temporary directory
    python bench/chaos.py --storage postgresql://postgres@127.0.0.1:5432/chaos
    python bench/chaos.py --only takeover,outputs  # some parts: kills, faults, takeover, outputs

Besides kills and faults: SIGTERM/SIGINT to the driver's whole process group (timed: the driver
must end within 20 s), a driver paused past its lease that wakes after a `--resume` took the
study over (it must write nothing: a forked study is one whose audit fails after it wakes), and
`python -m reports --out` pointed at the database (a lost study is one it no longer holds).

The last lines are the figures the README quotes; rows lost, duplicates, forked and lost studies
must be 0.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
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
    (
        "SIGTERM to the whole process group mid-epoch",
        lambda t: _n(t, "COMPLETE") >= 2 and _n(t, "RUNNING"),
        -signal.SIGTERM,  # negative: to the group, as timeout, systemd and Kubernetes send it
        (),
    ),
]
GROUP_DEADLINE_SECONDS = 20.0  # a signalled driver must be gone within this
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
    ["--trial-timeout", "0"], ["--trial-timeout", "inf"], ["--epochs", str(10**30)],
    ["--trials", str(10**9)], ["--seed", "-1"], ["--final-seeds", "5000"],
    ["--trial-timeout", "1e12"],
]  # fmt: skip
LEASE_SECONDS = "3"  # BOOTSTUDY_LEASE_SECONDS of the takeover scenario's two drivers


def _n(trials, status: str) -> int:
    return int((trials["status"] == status).sum())


def _driver(
    storage: str, results: Path, name: str, *args: str, stderr=subprocess.DEVNULL
) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(DRIVER), storage, str(results), name, *args],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def _trials(storage: str, name: str):
    with Store(storage) as store:
        return store.trials_frame(name)


def _strike(storage, results, name, when, signum, extra) -> tuple[bool, dict, float]:
    """Run a driver, strike when `when` holds (a negative `signum`: at its process group);
    return (struck, completed results before, seconds from the strike to the driver's exit)."""
    proc = _driver(storage, results, name, "--seconds-per-epoch", "0.6", *extra)
    before: dict = {}
    deadline = time.monotonic() + 240
    struck, struck_at = False, 0.0
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            trials = _trials(storage, name)
        except Exception:  # not created yet
            continue
        if when(trials):
            with Store(storage) as store:
                before = completed_results(store, name)
            if signum < 0 or signum == signal.SIGINT:  # Ctrl-C reaches the whole group
                os.killpg(proc.pid, abs(signum))
            else:
                os.kill(proc.pid, signum)
            struck, struck_at = True, time.monotonic()
            break
    try:
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    seconds = time.monotonic() - struck_at if struck else math.nan
    if signum == signal.SIGKILL:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the Ray it started, as job control would
    return struck, before, seconds


def _finish(storage, results, name, *extra) -> int:
    proc = _driver(storage, results, name, "--resume", "--seconds-per-epoch", "0", *extra)
    return proc.wait(timeout=600)


def _takeover(storage: str, results: Path, name: str) -> tuple[bool, bool]:
    """A driver paused (SIGSTOP) past its lease, a `--resume` that takes the study over and
    finishes it, then the first driver woken (SIGCONT). Returns (the woken driver exited with
    one line and wrote nothing, the study forked: its audit fails)."""
    os.environ["BOOTSTUDY_LEASE_SECONDS"] = LEASE_SECONDS  # both drivers inherit it
    try:
        first = _driver(storage, results, name, "--seconds-per-epoch", "1.5", "--trials", "2",
                        stderr=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            time.sleep(0.2)
            with contextlib.suppress(Exception):
                trials = _trials(storage, name)
                if (trials[trials["status"] == "RUNNING"]["epochs_run"] >= 1).sum() == 2:
                    break
        first.send_signal(signal.SIGSTOP)
        time.sleep(float(LEASE_SECONDS) + 2)
        resumed = _finish(storage, results, name)
        metrics_before = _trials(storage, name)
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=180)
    finally:
        del os.environ["BOOTSTUDY_LEASE_SECONDS"]
    lines = err.decode().strip().splitlines()
    unchanged = _trials(storage, name).equals(metrics_before)
    clean = (
        resumed == 0
        and first.returncode == 2
        and bool(lines)
        and lines[-1].startswith("error: this driver lost study")
        and unchanged
    )
    return clean, not audit_study(storage, name).ok


def _report_over_database(storage: str, results: Path) -> tuple[int, int]:
    """`python -m reports --out` at the database file and its -wal: (tries, studies lost)."""
    if not storage.startswith("sqlite"):
        return 0, 0
    database = Path(storage.removeprefix("sqlite:///"))
    with Store(storage) as store:
        before = {s.name for s in store.list_studies()}
        name = next(iter(before), None)
    if name is None:
        return 0, 0
    lost = 0
    for out in (database, Path(f"{database}-wal"), results / "notes.txt"):
        if out.suffix == ".txt":
            out.write_text("not ours")
        subprocess.run(
            [sys.executable, "-m", "reports", "--study", name, "--storage", storage, "--out",
             str(out)], cwd=REPO, capture_output=True, timeout=300,
        )  # fmt: skip
        with Store(storage) as store:
            lost += len(before - {s.name for s in store.list_studies()})
        lost += out.suffix == ".txt" and out.read_text() != "not ours"
    return 3, lost


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
    p.add_argument(
        "--only",
        default="kills,faults,takeover,outputs",
        help="comma-separated parts to run: kills, faults, takeover, outputs",
    )
    args = p.parse_args()
    parts = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="bootstudy-chaos-"))
    storage = args.storage or f"sqlite:///{tmp / 'chaos.db'}"
    survived = injected = recorded = lost = duplicates = disagreements = 0
    forked = lost_studies = takeovers_clean = report_tries = 0
    started = time.monotonic()
    kills = KILLS if "kills" in parts else []
    for i, (what, when, signum, extra) in enumerate(kills):
        name = f"chaos-kill-{i}"
        # Its own seed: identical configs of earlier scenarios would be REUSED, not run.
        extra = (*extra, "--extra", f"seed={i + 1}")
        struck, before, seconds = _strike(storage, tmp, name, when, signum, extra)
        in_time = signum == signal.SIGKILL or seconds < GROUP_DEADLINE_SECONDS
        code = _finish(storage, tmp, name, *extra)
        with Store(storage) as store:
            after = completed_results(store, name)
        audit = audit_study(storage, name)
        gone = sum(1 for k, v in before.items() if after.get(k) != v)
        lost += gone
        duplicates += len(audit.duplicates)
        disagreements += len(audit.problems)
        survived += struck and in_time and code == 0 and audit.ok and not gone
        print(f"{what}: struck={struck}, driver gone {seconds:.1f} s after, resume exit {code}, "
              f"{audit.completed} completed, lost {gone}, duplicates {len(audit.duplicates)}, "
              f"problems {len(audit.problems)}", flush=True)  # fmt: skip
    faults = list(FAULTS) if "faults" in parts else []
    if storage.startswith("postgresql") and "faults" in parts:
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
    takeovers = 1 if "takeover" in parts else 0
    for i in range(takeovers):
        clean, fork = _takeover(storage, tmp, f"chaos-takeover-{i}")
        takeovers_clean += clean
        forked += fork
        print(f"a driver paused past its lease, taken over, woken: clean={clean}, forked={fork}")
    if "outputs" in parts:
        report_tries, lost_studies = _report_over_database(storage, tmp)
    tried, refused = _bad_inputs(tmp)
    print(f"({(time.monotonic() - started) / 60:.1f} min, storage {storage.split('://')[0]})")
    print(f"kills survived: {survived}/{len(kills)}")
    print(f"faults injected and recorded: {recorded}/{len(faults)} (injected {injected})")
    print(f"bad inputs tried: {tried}, refused in one line with exit 2: {refused}")
    print(f"disagreements with Optuna: {disagreements}")
    print(f"takeovers where the woken driver wrote nothing: {takeovers_clean}/{takeovers}")
    print(f"reports aimed at the database or a file not ours: {report_tries}")
    print(f"forked studies: {forked}")
    print(f"lost studies: {lost_studies}")
    print(f"rows lost: {lost}")
    print(f"duplicates: {duplicates}")


if __name__ == "__main__":
    main()
