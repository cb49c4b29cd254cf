"""`run_study.py --address` on a real Ray cluster: a head started with `ray start --head`.

The head gets its own short temp dir (Ray's socket paths have a length limit) and free ports for
everything it listens on, so it can run next to other Ray instances. `ray stop` cannot be scoped
(it stops every Ray process on the machine), so the head is stopped through its own processes:
those in the session `ray start --block` leads, and any whose command line names its temp dir.

Authentication is explicit on both sides (`AUTH_ENV`): Ray 2.60's `ray start --head` turns token
auth on by itself when ~/.ray/auth_token exists, while `ray.init(address=...)` with an explicit
address never does, so without it the result would depend on what else ran on this machine.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import study_config
from ray._private.utils import get_ray_client_dependency_error

from study.store import Store

ROOT = Path(__file__).resolve().parent.parent
RAY = Path(sys.executable).with_name("ray")
HEAD_STARTUP_SECONDS = 90  # GCS, raylet and the agents, on 2 busy cores
STUDY_SECONDS = 300  # 4 smoke trials of one epoch on 2 CPUs, imports included
WORKER_PORTS = 40  # one per worker process; 2 CPUs need few, Ray's default range is 10,000 wide


def _auth_env() -> dict[str, str]:
    """Token auth for the head and the driver alike, with a token of this test's own."""
    return {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(32),
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def _free_ports(n: int) -> list[int]:
    """`n` distinct ports free right now (held open together so none is handed out twice)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _free_range(size: int) -> int:
    """The first port of `size` consecutive free ports."""
    rng = random.Random()
    for _ in range(200):
        first = rng.randrange(20000, 30000 - size)
        try:
            held = []
            for port in range(first, first + size):
                s = socket.socket()
                held.append(s)
                s.bind(("0.0.0.0", port))
            return first
        except OSError:
            continue
        finally:
            for s in held:
                s.close()
    raise RuntimeError(f"no {size} consecutive free ports in 20000-30000")


def _processes_of(session_id: int, temp_dir: str) -> list[int]:
    """PIDs in the session `session_id`, or whose command line mentions `temp_dir`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        pid = int(entry.name)
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
            if os.getsid(pid) == session_id or temp_dir in cmdline:
                found.append(pid)
        except (OSError, ProcessLookupError):
            continue  # gone meanwhile
    return found


def _stop_head(head: subprocess.Popen, temp_dir: str) -> None:
    """SIGTERM everything of this head (only), then SIGKILL what is left after 15 s."""
    pids = _processes_of(head.pid, temp_dir)
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            head.poll()  # reap our direct child
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
            if not pids:
                return
            time.sleep(0.2)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture
def ray_head() -> Iterator[tuple[str, Path, dict[str, str]]]:
    """A Ray head on free ports with 2 CPUs; yields its address, temp dir and client env."""
    env = _auth_env()
    temp_dir = Path(tempfile.mkdtemp(prefix="rc_", dir="/tmp"))
    port, client, node_manager, object_manager, agent, agent_grpc, runtime_env, metrics = (
        _free_ports(8)
    )
    worker_first = _free_range(WORKER_PORTS)
    command = [
        str(RAY),
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(port),
        "--num-cpus",
        "2",
        "--temp-dir",
        str(temp_dir),
        "--include-dashboard",
        "false",
        "--node-manager-port",
        str(node_manager),
        "--object-manager-port",
        str(object_manager),
        "--dashboard-agent-listen-port",
        str(agent),
        "--dashboard-agent-grpc-port",
        str(agent_grpc),
        "--runtime-env-agent-port",
        str(runtime_env),
        "--metrics-export-port",
        str(metrics),
        "--min-worker-port",
        str(worker_first),
        "--max-worker-port",
        str(worker_first + WORKER_PORTS - 1),
    ]
    if get_ray_client_dependency_error() is None:  # else no client server starts (and the
        command += ["--ray-client-server-port", str(client)]  # flag is refused)
    log = temp_dir / "ray_start.log"
    with open(log, "wb") as out:
        head = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, cwd=ROOT, env=env
        )
    try:
        deadline = time.monotonic() + HEAD_STARTUP_SECONDS
        while "Ray runtime started" not in log.read_text(errors="ignore"):
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray start --head did not come up:\n{log.read_text()}")
            time.sleep(0.5)
        yield f"127.0.0.1:{port}", temp_dir, env
    finally:
        _stop_head(head, str(temp_dir))
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.mark.slow  # ~65 s: a real `ray start --head` and worker node (make test-slow, CI)
def test_run_study_on_a_ray_cluster(ray_head, tmp_path):
    address, temp_dir, env = ray_head
    # What the command below runs, as run_study.py resolves it.
    config = study_config(
        tmp_path,
        db="x.db",
        space="data_fraction",
        name="data_fraction-fashion_mnist-smoke",
        trials_per_arm=1,
        epochs=1,
        grace_epochs=1,
        final_seeds=0,
    )
    storage = config.storage
    command = [
        sys.executable,
        "run_study.py",
        "--space",
        "data_fraction",
        "--preset",
        "smoke",
        "--address",
        address,
        "--storage",
        storage,
        "--results-dir",
        str(tmp_path),
        "--no-report",
        "--trials",
        "1",
        "--epochs",
        "1",
        "--grace-epochs",
        "1",
        "--final-seeds",
        "0",
    ]
    run = subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=STUDY_SECONDS
    )
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stdout}\n{run.stderr}"

    with Store(storage) as store:
        assert store.get_study(config.name).status == "FINISHED"
        trials = store.trials_frame(config.name)
    assert sorted(trials["arm"]) == sorted(arm.name for arm in config.arms())
    assert len(config.arms()) == 4  # vit, agent, shared, joint at one fraction
    assert list(trials["status"]) == ["COMPLETE"] * 4
    assert list(trials["epochs_run"]) == [1] * 4
    assert list(trials["phase"]) == ["search"] * 4
    assert trials["final_val_acc"].between(0.0, 1.0).all()
    assert trials["ray_trial_id"].notna().all()

    # The driver joined this head instead of starting a Ray of its own, and the trials ran on it:
    # the head's session holds the driver's log and the logs of workers of job 01000000 (the
    # first job, ours).
    logs = temp_dir / "session_latest" / "logs"
    assert list(logs.glob("python-core-driver-*.log")), sorted(p.name for p in logs.iterdir())
    assert list(logs.glob("worker-*-01000000-*.out")), sorted(p.name for p in logs.iterdir())
