"""Batched training augmentation with tensor ops on the training device.

The paper's CIFAR recipe: random crop with 4 px zero padding, horizontal flip with p = 0.5,
normalise, upsample 32 -> 224. Here it runs on a whole uint8 batch at once: the crop offsets and
flips of all images become one index tensor and one `gather`, so there is no DataLoader, no worker
process and no per-image Python loop (under 1 ms per 64 images at 32 px on a CPU core; see
bench/data_pipeline.py). Every random draw comes from the `torch.Generator` passed in, so the
same generator state gives the same batches.

Example:
    >>> import torch
    >>> augment = BatchAugmenter(mean=(0.5,), std=(0.25,), pad=3, flip=True, out_size=32)
    >>> images = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8)
    >>> augment(images, torch.Generator().manual_seed(0)).shape
    torch.Size([64, 1, 32, 32])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BatchAugmenter", "CropFlip", "batch_indices"]


class CropFlip(NamedTuple):
    """The random part of one batch's augmentation, one entry per image."""

    top: Tensor  # int64 [B], row offset into the padded image, 0..2*pad
    left: Tensor  # int64 [B], column offset into the padded image, 0..2*pad
    flipped: Tensor  # bool [B], mirror left-right after cropping


class BatchAugmenter:
    """Pad-and-random-crop, random horizontal flip, normalise, resize: uint8 in, float32 out.

    mean, std: per channel on the 0..1 scale (`ImageData.mean`, `.std`).
    pad: zero padding before the random crop back to the input size; 0 disables cropping.
    flip: whether to mirror each image with probability 0.5.
    out_size: side of the output (e.g. 224 for patch-16 ViTs); None keeps the input size.
    """

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        pad: int,
        flip: bool,
        out_size: int | None = None,
        device: torch.device | str = "cpu",
    ):
        if len(mean) != len(std) or min(std) <= 0:
            raise ValueError(f"need one positive std per mean, got mean={mean}, std={std}")
        if pad < 0 or (out_size is not None and out_size < 1):
            raise ValueError(f"pad must be >= 0 and out_size >= 1, got {pad}, {out_size}")
        self.device = torch.device(device)
        self.pad, self.flip, self.out_size = int(pad), bool(flip), out_size
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        # (x / 255 - mean) / std as one multiply-add: x * scale + shift
        self.scale = (1 / (255 * std_t)).to(self.device)
        self.shift = (-mean_t / std_t).to(self.device)

    @classmethod
    def for_data(cls, data, out_size: int | None = None, device: torch.device | str = "cpu"):
        """An augmenter with an `ImageData`'s own mean, std, padding and flip setting."""
        return cls(data.mean, data.std, data.pad, data.flip, out_size, device)

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """Augment a uint8 batch [B, C, H, W] (on self.device) into float32 [B, C, S, S]."""
        return self.apply(images, self.sample(len(images), generator))

    def eval(self, images: Tensor) -> Tensor:
        """Normalise and resize only: what validation and test batches get."""
        return self._normalise_resize(self._check(images))

    def sample(self, batch_size: int, generator: torch.Generator) -> CropFlip:
        """Draw crop offsets, then flips (only when enabled), from `generator`."""
        device = generator.device
        if self.pad:
            top, left = torch.randint(
                0, 2 * self.pad + 1, (2, batch_size), generator=generator, device=device
            )
        else:
            top = left = torch.zeros(batch_size, dtype=torch.int64, device=device)
        if self.flip:
            flipped = torch.rand(batch_size, generator=generator, device=device) < 0.5
        else:
            flipped = torch.zeros(batch_size, dtype=torch.bool, device=device)
        return CropFlip(top, left, flipped)

    def apply(self, images: Tensor, crop_flip: CropFlip) -> Tensor:
        """Crop at the given offsets of the zero-padded images, flip where asked, normalise."""
        images = self._check(images)
        batch, channels, height, width = images.shape
        # non_blocking: a blocking host-to-device copy would make the step wait for the device
        top, left, flipped = (t.to(images.device, non_blocking=True) for t in crop_flip)
        if self.pad == 0 and not self.flip:
            return self._normalise_resize(images)
        padded = F.pad(images, (self.pad,) * 4) if self.pad else images
        padded_width = width + 2 * self.pad
        rows = top[:, None] + torch.arange(height, device=images.device)  # [B, H]
        columns = torch.arange(width, device=images.device).expand(batch, width)
        columns = torch.where(flipped[:, None], columns.flip(1), columns) + left[:, None]  # [B, W]
        # One gather reads every output pixel from the flattened padded image
        flat_index = (rows[:, :, None] * padded_width + columns[:, None, :]).view(batch, 1, -1)
        flat = padded.reshape(batch, channels, -1)
        crops = flat.gather(2, flat_index.expand(batch, channels, height * width))
        return self._normalise_resize(crops.view(batch, channels, height, width))

    def _check(self, images: Tensor) -> Tensor:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"expected uint8 images [B, C, H, W], got {images.dtype} {images.shape}"
            )
        if images.shape[1] != self.scale.shape[1]:
            raise ValueError(f"expected {self.scale.shape[1]} channels, got {images.shape[1]}")
        return images

    def _normalise_resize(self, images: Tensor) -> Tensor:
        size = self.out_size
        resize = size is not None and images.shape[-2:] != (size, size)
        if resize and images.device.type == "cpu":
            # On a CPU, resizing the uint8 images is 10x faster than resizing floats (5 vs 60 ms
            # for 64 images 32 -> 224) and rounds to whole levels as PIL's Resize does in the
            # paper's pipeline; CUDA has no uint8 kernel, and there float is fast anyway.
            images, resize = self._resize(images, size), False
        x = images.float().mul_(self.scale.to(images.device)).add_(self.shift.to(images.device))
        return self._resize(x, size) if resize else x

    @staticmethod
    def _resize(images: Tensor, size: int) -> Tensor:
        # antialias only matters when shrinking; the paper's 32 -> 224 is pure upsampling
        shrink = size < images.shape[-1]
        return F.interpolate(
            images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink
        )


def batch_indices(
    n: int,
    batch_size: int,
    generator: torch.Generator,
    shuffle: bool = True,
    drop_last: bool = False,
) -> list[Tensor]:
    """Split range(n), shuffled by `generator` when `shuffle`, into batches of `batch_size`.

    The indices live on the generator's device. drop_last drops a final short batch.

    Example:
        >>> [len(b) for b in batch_indices(10, 4, torch.Generator().manual_seed(0))]
        [4, 4, 2]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if shuffle:
        order = torch.randperm(n, generator=generator, device=generator.device)
    else:
        order = torch.arange(n, device=generator.device)
    batches = list(order.split(batch_size)) if n else []  # split() of nothing is [empty]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return batches
