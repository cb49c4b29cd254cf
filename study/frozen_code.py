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

from typing import Any

__all__ = ["runtime_env"]

# never shipped, whatever .gitignore says: environments, results, carried GPU bundles, git itself
EXCLUDES = ["/.git", "/.venv", "/runs", "/.gpu", "/.whl", "__pycache__", "*.pyc"]


def runtime_env(local: bool) -> dict[str, Any]:
    """The job's runtime environment. For a local Ray the workers also get the driver's runs
    directory, which `trainers.home` would otherwise look for in the copy."""
    import search_spaces
    import study
    import trainers
    from trainers.home import REPO_ROOT, from_checkout, runs_dir

    env: dict[str, Any]
    if from_checkout():
        env = {"working_dir": str(REPO_ROOT), "excludes": list(EXCLUDES)}
    else:
        env = {"py_modules": [trainers, study, search_spaces]}
    if local:
        env["env_vars"] = {"BOOTSTUDY_HOME": str(runs_dir())}
    return env
