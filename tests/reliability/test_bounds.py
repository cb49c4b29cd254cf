"""Absurd numbers are refused before anything is created, and a refused run leaves no database.

Before: `--epochs 10**30` started training (the dry run listed ~100 ASHA rungs), `--arm
data_fraction=1e-9` trained on 10 images without a word, and six bad options created a
schema-only `studies.db` before refusing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_study_cli


def _argv(where: Path, *more: str) -> list[str]:
    return [
        "--space", "data_fraction", "--preset", "smoke", "--storage", f"sqlite:///{where / 's.db'}",
        "--results-dir", str(where / "runs"), *more,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "option, value, bound",
    [
        ("--epochs", str(10**30), "--epochs must be >= 1 and <= 10,000"),
        ("--trials", str(10**9), "--trials must be >= 1 and <= 100,000"),
        ("--final-seeds", "5000", "--final-seeds must be >= 0 and <= 1,000"),
        ("--seed", str(2**40), "--seed must be >= 0 and <= 1,048,576"),
        ("--seed", "-1", "--seed must be >= 0 and <= 1,048,576"),
        ("--retries", "1000", "--retries must be >= 0 and <= 100"),
        ("--concurrency", str(10**7), "--concurrency must be >= 0 and <= 100,000"),
        ("--trial-timeout", "1e12", "--trial-timeout must be a positive number of seconds, at"),
    ],
)
def test_numbers_past_their_bounds_are_one_line_before_anything(tmp_path, option, value, bound):
    for dry in (["--dry-run"], []):  # the dry run first: it must refuse too
        code, err = run_study_cli(_argv(tmp_path, option, value, *dry))
        assert code == 2, err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and bound in lines[0], err
    assert list(tmp_path.iterdir()) == []


def test_a_fraction_leaving_no_image_of_a_class_is_refused_and_writes_nothing(tmp_path):
    code, err = run_study_cli(_argv(tmp_path, "--arm", "data_fraction=1e-9,0.1", "--trials", "1"))
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "data_fraction=1e-09 leaves no training image" in lines[0], err
    assert "use data_fraction >= 0.00019" in lines[0]  # 5400 per class after the validation split
    assert not (tmp_path / "s.db").exists()


@pytest.mark.parametrize(
    "more, message",
    [
        (["--resume", "--study", "nope"], "no SQLite database at"),
        (["--cpus-per-trial", "512"], "no Ray node can run a trial"),
        (["--dataset", "no_such_dataset"], "no_such_dataset"),
    ],
)
def test_a_refused_run_leaves_no_database_behind(tmp_path, more, message):
    code, err = run_study_cli(_argv(tmp_path, *more))
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) in ([], ["runs"])  # no s.db, -wal, -shm


def test_the_trainer_refuses_absurd_epochs_in_one_line():
    # before: `python -m trainers --epochs 10**30` started training
    done = subprocess.run(
        [sys.executable, "-m", "trainers", "--epochs", str(10**30)],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "epochs must be at most 10,000" in lines[0], done.stderr
