"""What several test modules build alike: a small model's settings and a smoke study's config.

Imported as ``from helpers import ...`` (pytest puts ``tests/`` on the path; a module of its own
because ``tests/reliability`` has its own conftest, so ``from conftest import`` is ambiguous).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from study.plan import StudyConfig
from trainers.config import MODEL_PRESETS

# A model small enough to step every mode in about a second: 16 px, patch 4 (a 4x4 grid), two
# blocks; the res_like agent pools after block 0, so block 1's hint compares 16 ViT tokens with 4
# agent tokens (resampled). The tiny preset with only what differs stated.
SMALL_MODEL: dict[str, Any] = {
    **MODEL_PRESETS["tiny"],
    "img_size": 16,
    "embed_dim": 36,
    "depth": 2,
    "agent_design": "res_like",
    "batch_size": 8,
}


def study_config(tmp_path: Path, *, db: str = "s.db", **values: Any) -> StudyConfig:
    """A smoke-preset study on a SQLite file `db` in `tmp_path`, its results there too; `values`
    (at least `space` and `name`) add to or override those."""
    defaults = dict(preset="smoke", storage=f"sqlite:///{tmp_path}/{db}", results_dir=str(tmp_path))
    return StudyConfig.from_dict({**defaults, **values})
