"""Shared fixtures.

Storage: `storage_url` runs a test once per backend, on a SQLite file in ``tmp_path`` and on a fresh
PostgreSQL database (``BOOTSTUDY_TEST_POSTGRES``, default the server on 127.0.0.1:5432) that is
dropped afterwards. Without a reachable server the PostgreSQL case is skipped with the reason, or
fails when ``CI=true``: CI must test both backends.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Iterator

import pytest

STORAGE_BACKENDS = ("sqlite", "postgresql")
POSTGRES_ADMIN_URL = os.environ.get(
    "BOOTSTUDY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@pytest.fixture(autouse=True, scope="session")
def _bootstudy_home(tmp_path_factory) -> Iterator[None]:
    """Every default location (database, reports, Ray results) in a temporary runs directory: the
    tests, and the commands they start, never write into the checkout's runs/."""
    before = os.environ.get("BOOTSTUDY_HOME")
    os.environ["BOOTSTUDY_HOME"] = str(tmp_path_factory.mktemp("bootstudy_home"))
    yield
    if before is None:
        os.environ.pop("BOOTSTUDY_HOME", None)
    else:
        os.environ["BOOTSTUDY_HOME"] = before


@pytest.fixture(scope="session")
def shared_ray() -> Iterator[None]:
    """One local Ray for every in-process study of the session (`run_study` uses a Ray that is
    already up): each study saves Ray's start-up (~8 s here) and finds warm workers. Studies that
    run as subprocesses (the CLI, kills, interrupts) still start and stop their own."""
    from study import ray_tune

    shutdown = ray_tune.ray_session(None)
    yield
    shutdown()


@functools.cache
def postgres_unavailable() -> str | None:
    """Why the test PostgreSQL server cannot be used, or None when it can."""
    import psycopg

    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL at {POSTGRES_ADMIN_URL} unreachable: {' '.join(str(exc).split())}"


def require_postgres() -> None:
    """Skip the calling test without PostgreSQL; fail it instead when CI=true."""
    reason = postgres_unavailable()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the PostgreSQL backend must be tested)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def postgres_admin_url() -> str:
    """URL of the test PostgreSQL server's maintenance database (skip/fail as `storage_url`)."""
    require_postgres()
    return POSTGRES_ADMIN_URL


@pytest.fixture(params=STORAGE_BACKENDS)
def storage_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A URL to an empty database, once per backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'study.db'}"
        return
    require_postgres()
    import psycopg
    import sqlalchemy as sa

    name = f"bootstudy_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield sa.make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(False)
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- a real smoke study, run once per session through the command line --------------------------

SMOKE_STUDY_NAME = "smoke<script>window.__xss=1"  # markup in the name: reports must escape it


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory) -> dict:
    """`run_study.py --preset smoke` as a user runs it: the real trainer on Fashion-MNIST, real
    Ray, SQLite, the report at the end. Returns the storage URL, the output and the report path."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    tmp = tmp_path_factory.mktemp("smoke")
    storage = f"sqlite:///{tmp / 's.db'}"
    done = subprocess.run(
        [
            sys.executable,
            str(repo / "run_study.py"),
            "--space",
            "data_fraction",
            "--preset",
            "smoke",
            "--study",
            SMOKE_STUDY_NAME,
            "--storage",
            storage,
            "--results-dir",
            str(tmp),
            "--concurrency",
            "2",
            # the two modes the paper compares (agent and joint train in tests/test_trainer.py):
            # half the trials, the same path through Ray, SQL and the report
            "--arm",
            "mode=vit,shared",
        ],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = Path(done.stdout.split("report:")[1].split()[0]) if "report:" in done.stdout else None
    return {
        "storage": storage,
        "db": tmp / "s.db",
        "stdout": done.stdout,
        "report": report,
        "name": SMOKE_STUDY_NAME,
        "dir": tmp,
    }


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """One torch thread for a module's trainings: reproducible, and fair to a shared machine."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def fmnist():
    """The real Fashion-MNIST, loaded once per module."""
    from trainers.datasets import load_dataset

    return load_dataset("fashion_mnist")
