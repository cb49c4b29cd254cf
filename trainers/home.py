"""Where bootstudy writes when not told: the runs directory (databases, Ray results, reports, data).

Not the current directory: a study started from another folder (or by the `bootstudy-study` console
script from anywhere) must find the same database and add to it, not start a fresh `runs/` there.

    1. BOOTSTUDY_HOME, when set.
    2. `runs/` in the checkout, when bootstudy runs from one (an editable install, or a clone).
    3. $XDG_DATA_HOME/bootstudy (~/.local/share/bootstudy), for a plain `pip install`.

Paths given on the command line (`--storage sqlite:///x.db`, `--results-dir out`) are the user's:
relative ones stay relative to the working directory, as every other tool's.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "default_storage",
    "from_checkout",
    "runs_dir",
    "trial_weights",
    "weights_folder",
]

REPO_ROOT = Path(__file__).resolve().parents[1]


def from_checkout() -> bool:
    """Whether bootstudy runs from a checkout (an editable install, or a clone), not a wheel."""
    return (REPO_ROOT / "pyproject.toml").is_file() and (REPO_ROOT / "run_study.py").is_file()


def runs_dir() -> Path:
    """The runs directory (not created here: the first write creates it)."""
    home = os.environ.get("BOOTSTUDY_HOME")
    if home:
        return Path(home).expanduser().resolve()
    if from_checkout():
        return REPO_ROOT / "runs"
    data = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(data) / "bootstudy"


def default_storage() -> str:
    """The SQLite database every command uses unless given --storage: studies.db in `runs_dir`."""
    return f"sqlite:///{runs_dir() / 'studies.db'}"


def weights_folder(results_dir: str | Path, study: str, number: int | None = None) -> Path:
    """Where a study's final runs keep their weights: `<results_dir>/weights/<study>/`, and
    trial `number`'s in its `trial-<number>/` (the runner, the trials and the report agree)."""
    folder = Path(results_dir).resolve() / "weights" / study
    return folder if number is None else trial_weights(folder, number)


def trial_weights(study_folder: str | Path, number: int) -> Path:
    """Trial `number`'s folder inside a study's weights folder (`weights_folder`)."""
    return Path(study_folder) / f"trial-{number}"
