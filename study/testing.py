"""Stand-in trainers that drive the orchestrator with hand-made learning curves, and a toy mode.

Like `optuna.testing`: real studies, real Ray, real storage, but trials that cost nothing, so the
orchestration's decisions (pruning, budgets, failures, reuse, resume) can be tested exactly. Each
has the trainer's signature, `train_fn(config, report, data=None) -> result`.

`ToyMode` is a mode registered from outside `trainers/` (a linear classifier on the pixels), as a
user would add one; `ToyModeTrainer` is the real `train` for studies that use it: it registers the
mode in every process that unpickles it, so Ray's workers know the mode before they read a config.
"""

from __future__ import annotations

import math
import time
from typing import Any

from trainers.config import TrainConfig
from trainers.errors import NonFiniteLoss
from trainers.modes import MODES, Mode, cross_entropy, register_mode

__all__ = [
    "curve_value",
    "curve_trainer",
    "slow_curve_trainer",
    "failing_shared_trainer",
    "early_stopping_trainer",
    "TOY_MODE",
    "ToyMode",
    "ToyModeTrainer",
    "register_toy_mode",
    "seeded_trainer",
    "seeded_value",
]

TOY_MODE = "toy_linear"


def curve_value(config: TrainConfig, epoch: int) -> float:
    """A deterministic learning curve: plateau set by how far lr is from 1e-3, rising per epoch."""
    plateau = 0.9 - 0.2 * abs(math.log10(config.lr) + 3.0)
    plateau -= {"vit": 0.1, "agent": 0.0, "shared": 0.05, "joint": 0.02}.get(config.mode, 0.0)
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


class ToyMode(Mode):
    """A linear classifier on the raw pixels: one network, one loss term, one metric, no
    mode-specific config field (so any such field set away from its default is rejected)."""

    description = "a linear classifier on the pixels (a test of the mode registry)"
    primary = "linear"

    def build(self, num_classes, in_chans, img_size):
        from torch import nn

        return {"linear": nn.Sequential(nn.Flatten(1), nn.Linear(in_chans * img_size**2, 10))}

    def forward(self, x):
        return {"logits": self.networks["linear"](x)}

    def loss_terms(self, outputs, y, epoch):
        return {"cls": cross_entropy(outputs["logits"], y, self.cfg.label_smoothing)}

    def metrics(self, epoch):
        weight = self.networks["linear"][1].weight
        return {"weight_norm": float(weight.detach().norm())}


def register_toy_mode() -> type[Mode]:
    """Register `ToyMode` as `TOY_MODE` unless it is already (idempotent, unlike the registry)."""
    if TOY_MODE not in MODES:
        register_mode(TOY_MODE)(ToyMode)
    return MODES[TOY_MODE]


class ToyModeTrainer:
    """`trainers.train`, for studies with toy-mode arms: registers the toy mode where it is
    built and again wherever it is unpickled (each Ray worker, before the trial reads its
    config)."""

    def __init__(self) -> None:
        register_toy_mode()

    def __reduce__(self):
        return (ToyModeTrainer, ())

    def __call__(self, config: TrainConfig, report, data=None) -> dict[str, Any]:
        from trainers.training import train

        return train(config, report, data=data)


def seeded_value(config: TrainConfig) -> float:
    """A result that depends on the seed, as a real one does, and on mode and model size: the
    paired differences of a designed study then have a spread to put an interval on."""
    base = {"vit": 0.70, "shared": 0.72}.get(config.mode, 0.71)
    base += 0.05 if config.preset == "mid" else 0.0
    noise = ((config.seed * 7919) % 13) / 1000
    noise += 0.004 * (config.seed % 2) if config.mode == "shared" else 0.0
    return round(base + noise, 6)


def seeded_trainer(config: TrainConfig, report, data=None) -> dict[str, Any]:
    value = seeded_value(config)
    for epoch in range(1, config.epochs + 1):
        report({"epoch": epoch, "val_acc": value, "train_loss": 1.0})
    return {"val_acc": value, "test_acc": value, "epochs_run": config.epochs}
