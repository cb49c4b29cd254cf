"""A study's trials run the code its driver started with, not edits made while it runs.

Ray workers import lazily, from wherever `trainers` lives: before `study.frozen_code`, a long study
run from a checkout being edited had one trial fail with an ImportError (a reused worker with the
old `trainers.vit` loaded imported the new `trainers.methods`), and could train others with code
other than the `code_version` the study records.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOT_COPIED = (".git", ".venv", ".gpu", "runs", "__pycache__")

# A driver script in the checkout's root, started from there, as `python run_study.py` is: Ray puts
# both directories first on every worker's sys.path unless the job ships a working_dir.
PROBE = r"""
import json, os, pathlib
import ray
from study.ray_tune import ray_session

shutdown = ray_session(None, num_cpus=1, keep_out=(os.environ["RESULTS"],))
code = pathlib.Path(os.environ["CODE"], "trainers")
init = code / "__init__.py"
init.write_text(init.read_text() + "\nEDITED_AFTER_START = True\n")  # an edit mid-study
(code / "added_after_start.py").write_text("VALUE = 1\n")

@ray.remote
def probe():
    import importlib.util, os
    import trainers, trainers.home
    try:
        import bench.chaos
    except ImportError:
        bench = None
    return {
        "edited": getattr(trainers, "EDITED_AFTER_START", False),
        "added": importlib.util.find_spec("trainers.added_after_start") is not None,
        "file": trainers.__file__,
        "bench": bench and bench.chaos.__file__,
        "home": str(trainers.home.runs_dir()),
        "shipped_results": [p for p in ("runs/big.bin", "out/big.bin") if os.path.exists(p)],
    }

print(json.dumps(ray.get(probe.remote())))
shutdown()
"""


@pytest.mark.parametrize("layout", ["checkout", "installed"])
def test_workers_run_the_code_the_driver_started_with(tmp_path, layout):
    """checkout: the driver is `python run_study.py` in a clone; installed: the packages live
    elsewhere (a wheel) and the driver runs from another folder."""
    if layout == "checkout":
        code = cwd = tmp_path / "checkout"
        shutil.copytree(REPO, code, ignore=shutil.ignore_patterns(*NOT_COPIED))
        for results in ("runs", "out"):  # the default runs directory, and a --results-dir
            (code / results).mkdir()
            (code / results / "big.bin").write_bytes(b"\0" * (4 << 20))
    else:
        code, cwd = tmp_path / "site-packages", tmp_path / "work"
        for package in ("trainers", "study", "search_spaces"):
            shutil.copytree(
                REPO / package, code / package, ignore=shutil.ignore_patterns(*NOT_COPIED)
            )
        cwd.mkdir()
    (cwd / "probe.py").write_text(PROBE)
    home = tmp_path / "home"
    env = {
        **os.environ,
        "PYTHONPATH": str(code),
        "BOOTSTUDY_HOME": str(home),
        "CODE": str(code),
        "RESULTS": str(code / "out"),
    }
    done = subprocess.run(
        [sys.executable, "probe.py"], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["edited"] is False and seen["added"] is False, seen  # the start's code, frozen
    assert not seen["file"].startswith(str(code)), seen  # Ray's unpacked copy
    if layout == "checkout":  # the whole checkout travels: bench/ too (chaos's faulty trainer)
        assert seen["bench"].endswith("bench/chaos.py"), seen
        assert seen["shipped_results"] == [], seen  # but never results: runs/, --results-dir
    assert seen["home"] == str(home.resolve()), seen  # the driver's runs directory, not the copy's
