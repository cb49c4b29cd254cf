"""Stand-in trainers that drive the orchestrator with hand-made learning curves.

Like `optuna.testing`: real studies, real Ray, real storage, but trials that cost nothing, so the
orchestration's decisions (pruning, budgets, failures, reuse, resume) can be tested exactly. Each
has the trainer's signature, `train_fn(config, report, data=None) -> result`.
"""

from __future__ import annotations

import math
import time
from typing import Any

from trainers.config import TrainConfig
from trainers.errors import NonFiniteLoss

__all__ = [
    "curve_value",
    "curve_trainer",
    "slow_curve_trainer",
    "failing_shared_trainer",
    "early_stopping_trainer",
]


def curve_value(config: TrainConfig, epoch: int) -> float:
    """A deterministic learning curve: plateau set by how far lr is from 1e-3, rising per epoch."""
    plateau = 0.9 - 0.2 * abs(math.log10(config.lr) + 3.0)
    plateau -= {"vit": 0.1, "agent": 0.0, "shared": 0.05, "joint": 0.02}[config.mode]
    plateau *= 0.5 + 0.5 * config.data_fraction
    return round(plateau * (1.0 - 0.5**epoch), 6)


def curve_trainer(config: TrainConfig, report, data=None, seconds_per_epoch: float = 0.0):
    for epoch in range(1, config.epochs + 1):
        if seconds_per_epoch:
            time.sleep(seconds_per_epoch)
        report({"epoch": epoch, "val_acc": curve_value(config, epoch), "train_loss": 1.0 / epoch})
    final = curve_value(config, config.epochs)
    return {"test_acc": final - 0.01, "val_acc": final, "epochs_run": config.epochs}


def slow_curve_trainer(config: TrainConfig, report, data=None) -> dict[str, Any]:
    """0.5 s per epoch: long enough for a test to kill the driver mid-study."""
    return curve_trainer(config, report, data, seconds_per_epoch=0.5)


def failing_shared_trainer(config: TrainConfig, report, data=None) -> dict[str, Any]:
    """Shared-mode trials blow up in epoch 2, as a diverging run would; other modes learn."""
    if config.mode == "shared":
        report({"epoch": 1, "val_acc": 0.1, "train_loss": 2.3})
        raise NonFiniteLoss(2, 5, {"cls_vit": float("nan")})
    return curve_trainer(config, report, data)


def early_stopping_trainer(config: TrainConfig, report, data=None) -> dict[str, Any]:
    """Stops itself after half the epochs, as a trainer with its own early stopping would."""
    for epoch in range(1, max(1, config.epochs // 2) + 1):
        report({"epoch": epoch, "val_acc": curve_value(config, epoch), "train_loss": 1.0})
    return {"val_acc": curve_value(config, max(1, config.epochs // 2))}
