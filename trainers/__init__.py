"""The bootstrapping trainer: `train(config, report) -> result` and what it is made of.

Lives here: `TrainConfig` (config.py), `train` (training.py), the registries of training modes,
datasets and agent designs, the ViT and the agent CNN, the losses, the data pipeline, the errors
every command shares (errors.py), the `Registry` class and the command-line plumbing (cli.py), and
`python -m trainers` (one training).

May import: the standard library, torch, timm, numpy; nothing else of bootstudy (it is the ground
floor: no Ray, no SQL, no Optuna).
Imported by: every other package. `train` is imported lazily: the store, the study plan and the
command lines import `trainers.errors`, `trainers.config` and `trainers.cli` without paying for
torch and timm.
"""

from trainers.config import MODEL_PRESETS, TrainConfig, config_hash
from trainers.errors import BootstudyError, ConfigError, DataError, NonFiniteLoss

__all__ = [
    "MODEL_PRESETS",
    "TrainConfig",
    "config_hash",
    "train",
    "BootstudyError",
    "ConfigError",
    "DataError",
    "NonFiniteLoss",
]


def __getattr__(name: str):
    if name == "train":
        from trainers.training import train

        return train
    raise AttributeError(f"module 'trainers' has no attribute {name!r}")
