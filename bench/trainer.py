"""What one real training step costs per mode, and what the data pipeline adds to it.

Figures, not tests. Two tables, both timing `trainers.training.train_step` (forward, losses,
backward, clipping, AdamW and scheduler step: the trainer's own code, not a copy) on a `Run`
built exactly as `train` builds it:

1. images/s of one step for vit, agent, joint and shared, at the `tiny` preset on Fashion-MNIST
   (1x28x28) and at `vit_s` size on random uint8 data of CIFAR shape (3x32x32, patch 4), batch 64,
   plus each mode's step time over the ViT's (the paper reports ~1.15x for shared on GPUs).
2. shared-mode step time with three ways of making the batch, over the step on pre-made float
   tensors (the floor): the trainer's in-memory `BatchAugmenter` on uint8 tensors, and
   torchvision transforms through a DataLoader with 0 and 2 workers (bench/data_pipeline.py's
   dataset).

Steps of the compared variants are interleaved (A, B, C, A, B, C, ...), so a change in the
machine's load hits all of them alike; each figure is the median over the timed steps.

Run: .venv/bin/python bench/trainer.py [--quick] [--threads N] [--steps N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # run as a script from anywhere

from data_pipeline import PILDataset  # noqa: E402

from trainers.augment import BatchAugmenter, batch_indices  # noqa: E402
from trainers.config import TrainConfig  # noqa: E402
from trainers.datasets import load_dataset  # noqa: E402
from trainers.training import Run, train_step  # noqa: E402

MODES = ("vit", "agent", "joint", "shared")
BATCH = 64  # the paper's batch size
N_IMAGES = 10_000  # images the batches are drawn from


class _Bench:
    """One mode's networks and optimizers, stepping on whatever batches it is given."""

    def __init__(self, mode: str, preset: str, shape: tuple[int, int, int], num_classes: int):
        cfg = TrainConfig(mode=mode, preset=preset, batch_size=BATCH, epochs=1000, device="cpu")
        channels, size, _ = shape
        torch.manual_seed(0)
        cpu = torch.device("cpu")
        self.run = Run.create(cfg, num_classes, channels, size, cpu, n_train=BATCH * 1000)
        for module in self.run.networks.values():
            module.train()
        self.steps = 0

    def step(self, x: Tensor, y: Tensor) -> None:
        train_step(self.run, x, y, epoch=0, step=self.steps)  # epoch 0: the full hint weight
        self.steps += 1


def _interleaved_medians(
    steps: dict[str, Callable[[], object]], timed: int, warmup: int
) -> dict[str, tuple[float, float]]:
    """Median (wall, CPU) seconds of each callable, calling them in turn `warmup + timed` times."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    for i in range(warmup + timed):
        for name, step in steps.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            step()
            if i >= warmup:
                times[name].append(
                    (time.perf_counter() - started, time.process_time() - started_cpu)
                )
    return {
        name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
        for name, t in times.items()
    }


class _Batches:
    """Random batches of uint8 images, as the trainer draws them, forever."""

    def __init__(self, images: Tensor, labels: Tensor, seed: int = 0):
        self.images, self.labels = images, labels
        self.generator = torch.Generator().manual_seed(seed)
        self.pending: list[Tensor] = []

    def next_index(self) -> Tensor:
        if not self.pending:
            self.pending = batch_indices(len(self.images), BATCH, self.generator, drop_last=True)
        return self.pending.pop()


class _Data(NamedTuple):
    images: Tensor  # uint8 [N, C, H, W]
    labels: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    pad: int
    what: str

    def augmenter(self) -> BatchAugmenter:
        return BatchAugmenter(self.mean, self.std, self.pad, flip=True)


def _torchvision_loader(data: _Data, workers: int):
    """The classic recipe, per image: PIL -> RandomCrop(pad) -> flip -> ToTensor -> Normalize."""
    from torch.utils.data import DataLoader
    from torchvision import transforms

    size = data.images.shape[-1]
    transform = transforms.Compose(
        [
            transforms.RandomCrop(size, padding=data.pad),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(data.mean, data.std),
        ]
    )
    loader = DataLoader(
        PILDataset(data.images, data.labels, transform),
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
    )

    def batches():
        while True:
            yield from loader

    return batches()


def _data(preset: str) -> _Data:
    if preset == "tiny":
        ds = load_dataset("fashion_mnist")
        images, labels = ds.train_images[:N_IMAGES], ds.train_labels[:N_IMAGES]
        return _Data(images, labels, ds.mean, ds.std, ds.pad, "Fashion-MNIST 1x28x28")
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N_IMAGES, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (N_IMAGES,), generator=generator)
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)  # CIFAR-10's, roughly
    return _Data(images, labels, mean, std, 4, "random uint8 3x32x32 (CIFAR shape)")


def bench_modes(preset: str, timed: int, warmup: int) -> dict[str, float]:
    """Median wall seconds per step of each mode, on augmented batches made outside the timing.

    Also prints the median CPU seconds of the process per step: on a machine shared with other
    jobs, wall time measures the load as much as the step, CPU time much less so.
    """
    data = _data(preset)
    images, labels, augment = data.images, data.labels, data.augmenter()
    source = _Batches(images, labels)
    benches = {mode: _Bench(mode, preset, tuple(images.shape[1:]), 10) for mode in MODES}
    wall: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    for i in range(warmup + timed):
        index = source.next_index()  # one batch per round, the same for every mode
        x, y = augment(images[index], source.generator), labels[index]
        for mode, bench in benches.items():
            started, started_cpu = time.perf_counter(), time.process_time()
            bench.step(x, y)
            if i >= warmup:
                wall[mode].append(time.perf_counter() - started)
                cpu[mode].append(time.process_time() - started_cpu)
    medians = {mode: statistics.median(t) for mode, t in wall.items()}
    cpu_medians = {mode: statistics.median(t) for mode, t in cpu.items()}
    params = {mode: sum(b.run.mode.parameter_counts().values()) for mode, b in benches.items()}
    print(f"\n{preset}: {data.what}, batch {BATCH}")
    print(
        f"  {'mode':<8}{'params':>12}{'ms/step':>10}{'img/s':>8}{'x vit':>8}"
        f"{'cpu ms':>10}{'x vit':>8}"
    )
    for mode in MODES:
        seconds, cpu_seconds = medians[mode], cpu_medians[mode]
        print(
            f"  {mode:<8}{params[mode]:>12,}{seconds * 1e3:>10.1f}{BATCH / seconds:>8.0f}"
            f"{seconds / medians['vit']:>8.2f}{cpu_seconds * 1e3:>10.1f}"
            f"{cpu_seconds / cpu_medians['vit']:>8.2f}"
        )
    return {**medians, **{f"{mode}_cpu": v for mode, v in cpu_medians.items()}}


def bench_pipelines(preset: str, timed: int, warmup: int) -> dict[str, float]:
    """Median seconds of (make the batch + shared-mode step), per way of making the batch."""
    data = _data(preset)
    images, labels, augment = data.images, data.labels, data.augmenter()
    bench = _Bench("shared", preset, tuple(images.shape[1:]), 10)
    source = _Batches(images, labels)
    normalised = augment.eval(images)  # the floor: no augmentation, no conversion per step

    def preloaded() -> None:
        index = source.next_index()
        bench.step(normalised[index], labels[index])

    def augmented() -> None:
        index = source.next_index()
        bench.step(augment(images[index], source.generator), labels[index])

    loader_w0 = _torchvision_loader(data, workers=0)

    def torchvision_w0() -> None:
        bench.step(*next(loader_w0))

    results = _interleaved_medians(
        {
            "preloaded_float": preloaded,
            "batch_augmenter": augmented,
            "torchvision_w0": torchvision_w0,
        },
        timed,
        warmup,
    )
    # Workers prefetch while other variants step, which would hide their cost: timed on their own
    loader_w2 = _torchvision_loader(data, workers=2)

    def torchvision_w2() -> None:
        bench.step(*next(loader_w2))

    results.update(_interleaved_medians({"torchvision_w2": torchvision_w2}, timed, warmup))
    base, base_cpu = results["preloaded_float"]
    print(f"\n{preset}, shared mode: {data.what}, batch {BATCH}, pad {data.pad} + flip")
    print(f"  {'pipeline':<18}{'ms/step':>10}{'x float':>9}{'cpu ms':>10}{'x float':>9}")
    for name, (seconds, cpu_seconds) in results.items():
        print(
            f"  {name:<18}{seconds * 1e3:>10.1f}{seconds / base:>9.3f}"
            f"{cpu_seconds * 1e3:>10.1f}{cpu_seconds / base_cpu:>9.3f}"
        )
    print("  (cpu ms: this process only; the w2 workers' CPU time is not in it)")
    return {name: wall for name, (wall, _) in results.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps: a rough look in ~2 min")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="torch threads (default: all cores). On a machine busy with other jobs use 1: "
        "OpenMP threads spin-waiting on a descheduled peer can make a step 30x slower",
    )
    parser.add_argument("--steps", type=int, default=None, help="timed steps (tiny preset)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    tiny_steps = args.steps or (8 if args.quick else 40)
    big_steps = max(2, tiny_steps // 4)
    warmup = 2 if args.quick else 3
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads on {os.cpu_count()} cores; "
        f"median of {tiny_steps} (tiny) / {big_steps} (vit_s) steps after {warmup} warm-up; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    ratios = {}
    for preset, timed in (("tiny", tiny_steps), ("vit_s", big_steps)):
        medians = bench_modes(preset, timed, warmup)
        ratios[f"{preset} shared/vit step (wall)"] = medians["shared"] / medians["vit"]
        ratios[f"{preset} shared/vit step (cpu)"] = medians["shared_cpu"] / medians["vit_cpu"]
    for preset, timed in (("tiny", tiny_steps), ("vit_s", big_steps)):
        pipelines = bench_pipelines(preset, timed, warmup)
        base = pipelines["preloaded_float"]
        for name in ("batch_augmenter", "torchvision_w0", "torchvision_w2"):
            ratios[f"{preset} {name}/float step"] = pipelines[name] / base
    print("\nratios (paper: shared/vit ~1.15x on GPUs; aims here: <= 1.5x, augmenter <= 1.05x)")
    for name, value in ratios.items():
        print(f"  {name:<36}{value:>6.2f}x")


if __name__ == "__main__":
    main()
