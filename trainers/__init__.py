"""The bootstrapping trainer: `train(config, report) -> result` and what it is made of.

`train` is imported lazily: the storage layer and the command lines import `trainers.errors` and
`trainers.config` without paying for torch and timm.
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
