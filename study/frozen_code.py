"""A study's trials run the code its driver started with, however the checkout changes meanwhile.

Ray workers import lazily, from wherever Python finds `trainers`: a study that ran for hours from a
checkout being edited had one trial fail with an ImportError (a reused worker with the old
`trainers.vit` loaded imported the new `trainers.methods`), and could have trained others with
code other than the `code_version` the study records. So the driver ships its code with the job
(zipped when Ray starts, ~1 MiB, unpacked once per node), and workers import that copy, on every
node of a cluster too:

- from a checkout, the checkout as Ray's `working_dir` (what git ignores stays behind: .venv,
  runs/). Only with a working_dir does Ray stop putting the driver's script and working
  directories, the live checkout, first on every worker's sys.path. Workers then run in the copy,
  which costs nothing here: they get their data from the driver (`ray.put`), not from files.
- from an installed package, its packages as Ray `py_modules` (the script and working
  directories hold no copy of them to shadow these).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["runtime_env"]

# never shipped, whatever .gitignore says: environments, results, carried GPU bundles, git itself
EXCLUDES = ["/.git", "/.venv", "/runs", "/.gpu", "/.whl", "__pycache__", "*.pyc"]


def runtime_env(local: bool, keep_out: Iterable[str | Path] = ()) -> dict[str, Any]:
    """The job's runtime environment. `keep_out`: folders that never travel though git may not
    ignore them (the study's results directory), besides the runs directory. For a local Ray the
    workers also get the driver's runs directory, which `trainers.home` would otherwise look for
    in the copy."""
    import search_spaces
    import study
    import trainers
    from trainers.home import REPO_ROOT, from_checkout, runs_dir

    env: dict[str, Any]
    if from_checkout():
        excludes = list(EXCLUDES)
        root = REPO_ROOT.resolve()
        for folder in (Path(f).expanduser().resolve() for f in (runs_dir(), *keep_out)):
            if folder == root or not folder.is_relative_to(root):
                continue  # only folders inside the checkout would travel
            pattern = f"/{folder.relative_to(root).as_posix()}"
            if pattern not in excludes:
                excludes.append(pattern)
        env = {"working_dir": str(REPO_ROOT), "excludes": excludes}
    else:
        env = {"py_modules": [trainers, study, search_spaces]}
    if local:
        env["env_vars"] = {"BOOTSTUDY_HOME": str(runs_dir())}
    return env
