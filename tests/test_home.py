"""Where bootstudy writes when not told: never the working directory (trainers/home.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from study.plan import StudyConfig
from trainers import home
from trainers.datasets import cache_dir

REPO = Path(__file__).resolve().parents[1]


def test_bootstudy_home_moves_every_default(monkeypatch, tmp_path):
    monkeypatch.setenv("BOOTSTUDY_HOME", str(tmp_path / "h"))
    monkeypatch.delenv("BOOTSTUDY_CACHE", raising=False)
    config = StudyConfig(space="data_fraction", name="s", preset="smoke")
    assert config.storage == f"sqlite:///{tmp_path / 'h' / 'studies.db'}"
    assert config.results_dir == str(tmp_path / "h")
    assert cache_dir() == tmp_path / "h" / "data"
    from reports import default_out_path

    assert default_out_path("a_b") == tmp_path / "h" / "reports" / "a_b.html"
    assert default_out_path("a b").parent == tmp_path / "h" / "reports"  # a_b-<hash>.html


def test_a_checkout_keeps_its_runs_in_itself_and_an_install_in_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("BOOTSTUDY_HOME", raising=False)
    assert home.runs_dir() == REPO / "runs"  # this checkout, wherever the command runs from
    monkeypatch.setattr(home, "REPO_ROOT", tmp_path / "site-packages")  # no pyproject: installed
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert home.runs_dir() == tmp_path / "xdg" / "bootstudy"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert home.runs_dir() == Path.home() / ".local" / "share" / "bootstudy"


@pytest.mark.parametrize("cwd", ["repo", "elsewhere"])
def test_a_study_started_from_any_folder_uses_the_same_database(tmp_path, cwd):
    """The issue: `runs/` used to land in the current directory, one database per folder."""
    folder = REPO if cwd == "repo" else tmp_path / "elsewhere"
    folder.mkdir(exist_ok=True)
    env = {**os.environ, "BOOTSTUDY_HOME": str(tmp_path / "home")}
    done = subprocess.run(
        [sys.executable, str(REPO / "run_study.py"), "--space", "data_fraction", "--preset",
         "smoke", "--dry-run"],
        cwd=folder, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert str(tmp_path / "home" / "studies.db") in done.stdout
    assert not (folder / "runs").exists() or folder == REPO
