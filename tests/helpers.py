"""What several test modules build alike: a small model's settings and a smoke study's config.

Imported as ``from helpers import ...`` (pytest puts ``tests/`` on the path; a module of its own
because ``tests/reliability`` has its own conftest, so ``from conftest import`` is ambiguous).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from study.plan import StudyConfig
from trainers.config import MODEL_PRESETS
from trainers.vit import ViTShape, build_vit

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
# The same model built without a TrainConfig: one channel, ten classes.
SMALL_SHAPE = ViTShape(
    in_chans=1,
    num_classes=10,
    **{f.name: SMALL_MODEL[f.name] for f in dataclasses.fields(ViTShape) if f.name in SMALL_MODEL},
)


def small_vit(seed: int = 0, **changes: Any) -> torch.nn.Module:
    """`SMALL_SHAPE`'s ViT without dropout, seeded; `changes` override `build_vit`'s arguments."""
    torch.manual_seed(seed)
    no_dropout = dict(drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.0)
    return build_vit(**{**dataclasses.asdict(SMALL_SHAPE), **no_dropout, **changes})


def study_config(tmp_path: Path, *, db: str = "s.db", **values: Any) -> StudyConfig:
    """A smoke-preset study on a SQLite file `db` in `tmp_path`, its results there too; `values`
    (at least `space` and `name`) add to or override those."""
    defaults = dict(preset="smoke", storage=f"sqlite:///{tmp_path}/{db}", results_dir=str(tmp_path))
    return StudyConfig.from_dict({**defaults, **values})
