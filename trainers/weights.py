"""A run's trained networks, kept: one plain `state_dict` file per network, the config beside it.

Layout of a weights directory (what `python -m trainers --save DIR` and every final run of a
study write; a study's go to `<runs>/weights/<study>/trial-<number>/`):

    config.json   {"config": TrainConfig values, "num_classes", "in_chans", "img_size",
                   "epoch", "val_acc", "test_acc", "test_acc_<network>", "networks": [...]}
    vit.pt        torch.save(vit.state_dict())   (and agent.pt, ... one per network of the mode)

The weights are the best-validation epoch's (the epoch a search would select), and `test_acc` in
config.json is those weights' accuracy on the run's test split, so loading them reproduces it:

    >>> import json, torch
    >>> from trainers import TrainConfig
    >>> from trainers.modes import vit_from_config
    >>> from trainers.weights import measure_test_accuracy
    >>> saved = json.load(open("runs/weights/my-study/trial-12/config.json"))  # doctest: +SKIP
    >>> cfg = TrainConfig.from_dict(saved["config"])  # doctest: +SKIP
    >>> vit = vit_from_config(cfg, saved["num_classes"], saved["in_chans"], saved["img_size"])
    >>> vit.load_state_dict(torch.load("runs/weights/my-study/trial-12/vit.pt"))  # doctest: +SKIP
    >>> measure_test_accuracy(vit, cfg) == saved["test_acc"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainers.config import TrainConfig
from trainers.datasets import ImageData
from trainers.errors import ConfigError
from trainers.outputs import check_output_path

__all__ = [
    "BestWeights",
    "CONFIG_FILE",
    "check_weights_dir",
    "load_weights",
    "measure_test_accuracy",
    "save_weights",
]

CONFIG_FILE = "config.json"
NETWORK_FILES = ("vit.pt", "agent.pt")  # every network a built-in mode has


def check_weights_dir(directory: str | Path, storage_url: str | None = None) -> Path:
    """`directory` if weights may be written there (before training: a refusal costs nothing yet):
    none of its files may be the study database or a file that is not weights of ours
    (`trainers.outputs.check_output_path`, one line, exit 2)."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"weights go to a directory; '{directory}' is a file")
    for name in NETWORK_FILES:
        check_output_path(directory / name, storage_url, (".pt",))
    check_output_path(directory / CONFIG_FILE, storage_url, (".json",))
    return directory


class BestWeights:
    """A `checkpoint=` callback for `train` that keeps the best-validation epoch's weights.

    `train` calls it after every epoch with a snapshot whose `best_val_acc` includes that epoch;
    an improvement means this epoch's weights are the best so far (the first of equal epochs wins,
    as a search's selection would). Only the networks are kept, on the CPU.
    """

    def __init__(self) -> None:
        self.models: dict[str, dict[str, torch.Tensor]] | None = None
        self.val_acc = -1.0
        self.epoch = 0

    def __call__(self, state: dict[str, Any]) -> None:
        if state["best_val_acc"] > self.val_acc:
            self.val_acc, self.epoch = float(state["best_val_acc"]), int(state["epoch"])
            self.models = {
                name: {k: v.detach().to("cpu") for k, v in sd.items()}
                for name, sd in state["models"].items()
            }


def save_weights(
    directory: str | Path,
    config: TrainConfig,
    best: BestWeights,
    data: ImageData | None = None,
) -> dict[str, Any]:
    """Write `best`'s networks and `config` under `directory`; returns what config.json holds.

    The saved weights' test accuracy is measured here (the run's own `test_acc` is its last
    epoch's), so config.json states what loading them gives. Files appear whole or not at all."""
    if best.models is None:
        raise ConfigError("no epoch finished: there are no weights to save")
    directory = check_weights_dir(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = data if data is not None else _load(config)
    shape = _shape(config, data)
    networks = _build(config, shape, best.models)
    accuracy = _test_accuracies(networks, config, data)
    meta = {
        "config": config.to_dict(),
        **shape,
        "epoch": best.epoch,
        "val_acc": best.val_acc,
        **accuracy,
        "networks": sorted(best.models),
    }
    for name, state in best.models.items():
        _atomic(directory / f"{name}.pt", lambda path, s=state: torch.save(s, path))
    _atomic(directory / CONFIG_FILE, lambda path: path.write_text(json.dumps(meta, indent=1)))
    return meta


def load_weights(directory: str | Path, network: str = "vit") -> tuple[nn.Module, TrainConfig]:
    """The saved `network`, rebuilt from its config with the project's builder, weights loaded."""
    directory = Path(directory)
    try:
        meta = json.loads((directory / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise ConfigError(f"no saved weights in '{directory}' (no {CONFIG_FILE})") from None
    if network not in meta["networks"]:
        raise ConfigError(f"'{directory}' holds {', '.join(meta['networks'])}, not '{network}'")
    config = TrainConfig.from_dict(meta["config"])
    # every network, into one mode: shared mode's agent holds only its own parameters and
    # borrows the rest from the ViT's
    states = {n: torch.load(directory / f"{n}.pt", map_location="cpu") for n in meta["networks"]}
    shape = {k: meta[k] for k in ("num_classes", "in_chans", "img_size")}
    return _build(config, shape, states)[network], config


def measure_test_accuracy(
    network: nn.Module, config: TrainConfig, data: ImageData | None = None
) -> float:
    """Top-1 accuracy of `network` on `config`'s test split (its `max_eval_images` subset
    included), evaluated as `train` evaluates: the same images, normalisation and batches."""
    data = data if data is not None else _load(config)
    return _accuracy(network, config, data)


# --- helpers --------------------------------------------------------------------------------------


def _load(config: TrainConfig) -> ImageData:
    from trainers.datasets import load_dataset

    return load_dataset(config.dataset, config.data_dir)


def _shape(config: TrainConfig, data: ImageData) -> dict[str, int]:
    return {
        "num_classes": data.num_classes,
        "in_chans": data.channels,
        "img_size": config.img_size or data.image_size,
    }


def _build(
    config: TrainConfig, shape: dict[str, int], states: dict[str, dict[str, torch.Tensor]]
) -> dict[str, nn.Module]:
    from trainers.modes import build_mode

    mode = build_mode(config, shape["num_classes"], shape["in_chans"], shape["img_size"])
    for name, state in states.items():
        mode.networks[name].load_state_dict(state)
    return {name: mode.networks[name] for name in states}


def _test_accuracies(
    networks: dict[str, nn.Module], config: TrainConfig, data: ImageData
) -> dict[str, float]:
    from trainers.modes import MODES

    primary = MODES.lookup(config.mode).primary
    out = {}
    for name, network in networks.items():
        key = "test_acc" if name == primary else f"test_acc_{name}"
        out[key] = _accuracy(network, config, data)
    return out


@torch.no_grad()
def _accuracy(network: nn.Module, config: TrainConfig, data: ImageData) -> float:
    from trainers.augment import BatchAugmenter
    from trainers.training import prepare_data

    device = torch.device("cpu")
    prepared = prepare_data(config, data, device)
    augment = BatchAugmenter.for_data(data, config.img_size or data.image_size, device)
    network = network.to(device).eval()
    correct = 0
    for start in range(0, len(prepared.test_x), config.eval_batch_size):
        x = augment.eval(prepared.test_x[start : start + config.eval_batch_size])
        logits = network(x)
        logits = logits[0] if isinstance(logits, tuple) else logits
        correct += int((logits.argmax(dim=1) == prepared.test_y[start : start + len(x)]).sum())
    return correct / max(len(prepared.test_x), 1)


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)
