"""Where a study ran: code version, package versions, hardware (after modded-nanogpt's run logs).

`collect()` gives the dict `Store.create_study(provenance=...)` takes::

    >>> from study.provenance import collect
    >>> sorted(collect())
    ['code_version', 'hardware', 'package_versions']
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from study.schema import CODE_VERSION_LENGTH

__all__ = ["PACKAGES", "collect", "code_version", "package_versions", "hardware"]

PACKAGES = (  # distributions whose versions change results or how a study runs
    "bootstudy",
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "ray",
    "optuna",
    "optuna-dashboard",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "pandas",
    "scipy",
)
REPO_ROOT = Path(__file__).resolve().parent.parent
GIT_TIMEOUT_SECONDS = 5  # a hung git (network filesystem, lock) must not hold up a study


def collect(*, gpus: bool = True) -> dict[str, Any]:
    """Everything `Store.create_study` records about where the study runs."""
    return {
        "code_version": code_version(),
        "package_versions": package_versions(),
        "hardware": hardware(gpus=gpus),
    }


def code_version(repo: Path = REPO_ROOT) -> str:
    """``git describe --always --dirty`` of `repo` (e.g. ``3680d0b-dirty``), or ``unknown``."""
    try:
        completed = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    described = completed.stdout.strip()
    if completed.returncode != 0 or not described:
        return "unknown"
    return described[-CODE_VERSION_LENGTH:]  # keep the end: the commit and the dirty flag


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, None for those not installed."""
    versions: dict[str, str | None] = {}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def hardware(*, gpus: bool = True) -> dict[str, Any]:
    """CPU, memory and GPUs of this machine, plus the Python and OS running on it."""
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "ram_bytes": _ram_bytes(),
        "gpus": _gpus() if gpus else [],
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def _gpus() -> list[dict[str, Any]]:
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    found = []
    for index in range(torch.cuda.device_count()):
        properties = torch.cuda.get_device_properties(index)
        found.append(
            {
                "name": properties.name,
                "memory_bytes": properties.total_memory,
                "capability": f"{properties.major}.{properties.minor}",
            }
        )
    return found
