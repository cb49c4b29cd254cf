"""How long one training batch takes to prepare, four ways, on the same images.

(a) batch_augmenter: `trainers.augment.BatchAugmenter` on the in-memory uint8 tensor (what the
    trainer does): pad + random crop + flip + normalise as a few tensor ops per batch.
(b) preloaded_float: indexing a tensor normalised once in advance (no augmentation at all): the
    floor any pipeline could reach.
(c) torchvision_w0 / torchvision_w2: the classic recipe, PIL image -> RandomCrop(pad) ->
    RandomHorizontalFlip -> ToTensor -> Normalize, per image, through a DataLoader with 0 and 2
    worker processes.

Run: python bench/data_pipeline.py [--threads 1] [--steps 50]
(prints Fashion-MNIST, then synthetic CIFAR-sized 3x32x32 data, then the same upsampled to 224)
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from trainers.augment import BatchAugmenter, batch_indices  # noqa: E402

__all__ = ["time_pipelines"]


class PILDataset(Dataset):
    """What torchvision's CIFAR10/FashionMNIST do per item: uint8 array -> PIL -> transforms."""

    def __init__(self, images: Tensor, labels: Tensor, transform: Callable):
        self.images = images.permute(0, 2, 3, 1).numpy()  # NHWC, as PIL wants
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        from PIL import Image

        array = self.images[index]
        image = Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
        return self.transform(image), self.labels[index]


def _median_seconds(step: Callable[[], object], steps: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def time_pipelines(
    images: Tensor,
    labels: Tensor,
    batch_size: int = 64,
    steps: int = 50,
    out_size: int | None = None,
    pad: int | None = None,
    workers: tuple[int, ...] = (0, 2),
) -> dict[str, float]:
    """Median seconds per batch for each pipeline (see the module docstring), keyed by name.

    images: uint8 [N, C, H, W] on the CPU; pad defaults to H // 8 as in `trainers.datasets`;
    out_size resizes every pipeline's output (e.g. 224), None keeps H.

    Example:
        >>> from trainers.datasets import load_dataset  # doctest: +SKIP
        >>> data = load_dataset("fashion_mnist")
        >>> time_pipelines(data.train_images, data.train_labels, steps=20)
        {'batch_augmenter': 0.00012, 'preloaded_float': 3.1e-05, ...}
    """
    from torchvision import transforms

    pad = images.shape[-1] // 8 if pad is None else pad
    sample = images[:10000].float() / 255
    mean = sample.mean(dim=(0, 2, 3)).tolist()
    std = sample.std(dim=(0, 2, 3)).tolist()
    augment = BatchAugmenter(mean, std, pad=pad, flip=True, out_size=out_size)
    generator = torch.Generator().manual_seed(0)
    results: dict[str, float] = {}

    def cycle_batches() -> Callable[[], Tensor]:
        batches: list[Tensor] = []

        def next_batch() -> Tensor:
            if not batches:
                batches.extend(batch_indices(len(images), batch_size, generator, drop_last=True))
            return batches.pop()

        return next_batch

    next_batch = cycle_batches()

    def augmented() -> tuple[Tensor, Tensor]:
        index = next_batch()
        return augment(images[index], generator), labels[index]

    results["batch_augmenter"] = _median_seconds(augmented, steps)

    normalised = BatchAugmenter(mean, std, pad=0, flip=False).eval(images)

    def preloaded() -> tuple[Tensor, Tensor]:
        index = next_batch()
        x = normalised[index]
        if out_size is not None and out_size != x.shape[-1]:
            x = F.interpolate(x, size=(out_size, out_size), mode="bilinear", align_corners=False)
        return x, labels[index]

    results["preloaded_float"] = _median_seconds(preloaded, steps)

    size = images.shape[-1]
    transform = transforms.Compose(
        [
            transforms.RandomCrop(size, padding=pad),
            transforms.RandomHorizontalFlip(),
            *([transforms.Resize(out_size)] if out_size and out_size != size else []),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    dataset = PILDataset(images, labels, transform)
    for num_workers in workers:
        loader = DataLoader(
            dataset, batch_size=batch_size, shuffle=True, num_workers=num_workers, drop_last=True
        )
        results[f"torchvision_w{num_workers}"] = _median_seconds(iter(loader).__next__, steps)
    return results


def _print_table(title: str, results: dict[str, float], batch_size: int) -> None:
    base = results["batch_augmenter"]
    print(
        f"\n{title}  (median per batch of {batch_size}; torch threads: {torch.get_num_threads()})"
    )
    print(f"  {'pipeline':<18}{'ms/batch':>10}{'us/image':>10}{'x augmenter':>13}")
    for name, seconds in results.items():
        print(
            f"  {name:<18}{seconds * 1e3:>10.3f}{seconds * 1e6 / batch_size:>10.2f}"
            f"{seconds / base:>13.2f}"
        )


def main(argv: list[str] | None = None) -> None:
    import argparse

    from trainers.datasets import load_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # One thread by default: on a shared machine, two OpenMP threads waiting on a descheduled
    # peer turn a 0.3 ms batch into 90 ms now and then, and the medians stop meaning anything
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--steps", type=int, default=50, help="batches timed per pipeline")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    data = load_dataset("fashion_mnist")
    results = time_pipelines(data.train_images, data.train_labels, steps=args.steps)
    _print_table("Fashion-MNIST 1x28x28, pad 3, flip", results, 64)

    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (10000, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (10000,), generator=generator)
    _print_table(
        "synthetic CIFAR-sized 3x32x32, pad 4, flip",
        time_pipelines(images, labels, steps=args.steps),
        64,
    )
    upsampled = time_pipelines(images, labels, steps=20, out_size=224, workers=(0,))
    _print_table("synthetic 3x32x32 upsampled to 224 (the paper's input)", upsampled, 64)


if __name__ == "__main__":
    main()
