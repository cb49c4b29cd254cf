"""Class-balanced subsets and validation splits, fixed by a split seed.

The split seed is not the run seed: repeating a trial with another run seed trains on the same
images, so seed-to-seed spread measures training noise only. Every choice is drawn from a
`torch.Generator` seeded from (split seed, purpose, class), never from global RNG state, so the
same arguments give the same indices in any process (with the same torch version; record
`split_digest` with a trial to notice if that ever changes).

Order used by `limited_data_split` (and meant for the trainer): the validation images are carved
from the full training set first, then `data_fraction` is taken of the rest. The validation set is
therefore identical across data fractions, and the fractions are nested (see below).

Example:
    >>> from trainers.datasets import load_dataset
    >>> labels = load_dataset("fashion_mnist").train_labels
    >>> train_idx, val_idx = limited_data_split(labels, 0.01, val_fraction=0.1, seed=0)
    >>> len(train_idx), len(val_idx)  # round(5400 * 0.01) and round(6000 * 0.1) per class
    (540, 6000)
"""

from __future__ import annotations

import hashlib
import math
from numbers import Real

import numpy as np
import torch
from torch import Tensor

from trainers.errors import ConfigError

__all__ = ["class_balanced_indices", "limited_data_split", "split_digest", "train_val_split"]

SUBSET, VALIDATION = 0, 1  # purposes: separate random streams for the same split seed


def class_balanced_indices(labels: Tensor, fraction: float, seed: int) -> Tensor:
    """Sorted indices of `round(n_c * fraction)` images of every class c (at least one each).

    `round` is Python's (half to even): 6000 images x 0.013 -> 78 per class. Each class's images
    are put in one random order per seed, and a fraction takes a prefix of it, so for a fixed
    seed the subsets are nested: the 1% subset is inside the 5% subset. fraction=1 takes all.

    Example:
        >>> labels = torch.arange(10).repeat(100)  # 10 classes x 100 images
        >>> len(class_balanced_indices(labels, 0.05, seed=0))
        50
    """
    _check_fraction("fraction", fraction, low_open=True, high_open=False)
    chosen = [
        members[: _count(len(members), fraction, at_least=1, at_most=len(members))]
        for members in _shuffled_classes(labels, seed, SUBSET)
    ]
    return torch.sort(torch.cat(chosen)).values


def train_val_split(labels: Tensor, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(train, val) sorted indices; val takes round(n_c * val_fraction) images of each class c.

    val_fraction=0 gives an empty val. When val_fraction > 0 every class puts at least one image
    in val and keeps at least one for training (a class with a single image keeps it).

    Example:
        >>> labels = torch.arange(10).repeat(100)
        >>> train_idx, val_idx = train_val_split(labels, 0.1, seed=0)
        >>> len(train_idx), len(val_idx)
        (900, 100)
    """
    _check_fraction("val_fraction", val_fraction, low_open=False, high_open=True)
    train_parts, val_parts = [], []
    for members in _shuffled_classes(labels, seed, VALIDATION):
        n_val = _count(len(members), val_fraction, at_least=1, at_most=len(members) - 1)
        val_parts.append(members[:n_val])
        train_parts.append(members[n_val:])
    return torch.sort(torch.cat(train_parts)).values, torch.sort(torch.cat(val_parts)).values


def limited_data_split(
    labels: Tensor, data_fraction: float, val_fraction: float, seed: int
) -> tuple[Tensor, Tensor]:
    """(train, val) indices into `labels`: val split off first, then data_fraction of the rest.

    Example:
        >>> labels = torch.arange(10).repeat(100)
        >>> train_idx, val_idx = limited_data_split(labels, 0.5, 0.1, seed=0)
        >>> len(train_idx), len(val_idx)  # round(90 * 0.5) and round(100 * 0.1) per class
        (450, 100)
    """
    train_part, val_idx = train_val_split(labels, val_fraction, seed)
    chosen = class_balanced_indices(_as_labels(labels)[train_part], data_fraction, seed)
    return train_part[chosen], val_idx  # train_part is sorted, so this stays sorted


def split_digest(indices: Tensor) -> str:
    """A short fingerprint of a set of indices, to store with a trial and compare later."""
    values = np.ascontiguousarray(indices.detach().cpu().numpy().astype("<i8"))
    return hashlib.sha256(values.tobytes()).hexdigest()[:16]


def _shuffled_classes(labels: Tensor, seed: int, purpose: int) -> list[Tensor]:
    """Each class's indices (classes in ascending order), in an order fixed by (seed, purpose)."""
    labels = _as_labels(labels)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"split seed must be a non-negative integer, got {seed!r}")
    order = torch.argsort(labels, stable=True)
    classes, counts = torch.unique_consecutive(labels[order], return_counts=True)
    shuffled = []
    for label, members in zip(classes.tolist(), order.split(counts.tolist()), strict=True):
        # One generator per class: a class's order does not depend on which other classes exist
        stream = np.random.SeedSequence([seed, purpose, label]).generate_state(1, np.uint64)[0]
        generator = torch.Generator().manual_seed(int(stream))
        shuffled.append(members[torch.randperm(len(members), generator=generator)])
    return shuffled


def _as_labels(labels: Tensor) -> Tensor:
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point():
        raise ConfigError("labels must be a 1-D integer tensor")
    labels = labels.detach().cpu().long()
    if len(labels) and labels.min() < 0:
        raise ConfigError("labels must be non-negative class indices")
    return labels


def _count(n: int, fraction: float, at_least: int, at_most: int) -> int:
    if fraction == 0:
        return 0
    return max(0, min(at_most, max(at_least, round(n * fraction))))


def _check_fraction(name: str, value: float, low_open: bool, high_open: bool) -> None:
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (0 < value if low_open else 0 <= value) and (value < 1 if high_open else value <= 1)
    if not ok:
        interval = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
        raise ConfigError(f"{name} must be in {interval}, got {value!r}")
