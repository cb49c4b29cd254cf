"""What one real training step costs per mode, preset, device and precision, as img/s and MFU.

Figures, not tests. Times `trainers.training.train_step` (the mode's forward under the run's
autocast, float32 losses, backward, clipping, AdamW and scheduler step: the trainer's own code) on
a `Run` built exactly as `train` builds it, for every registered mode, and prints per mode:
parameters, ms per step, images/s, model FLOPs per step (`torch.utils.flop_counter` on one real
step: forward + backward matmuls and convolutions), achieved TFLOP/s and MFU (achieved / the
device's peak: a small table of GPUs, or `--peak-tflops`; a CPU's peak is cores x clock x FLOPs
per cycle of its vector units, stated), then the ratios shared/vit and shared/(vit + agent).

Shapes: `tiny` (Fashion-MNIST 1x28x28, the CPU preset), `vit_s` (3x32x32, patch 4, depth 6,
dim 288, 9 heads, MLP 1152: the paper's CIFAR ViT-S), both batch 64, 10 classes; on CUDA also
`vit_s224` (224 px, patch 16, 100 classes, batch 256: the issue's GPU yardstick).

Steps of all modes are interleaved (A, B, C, A, B, C, ...), so a change in the machine's load hits
them alike; each figure is a median. On CUDA each timed sample is a block of steps between two
synchronisations (the step itself never waits for the device).

`--concurrent N` measures packing: N processes each run the `tiny` shared step on the same device
for the same wall time; it prints their aggregate img/s over one process alone (fractional GPUs
in a study are this: several trials on one GPU; CUDA MPS is what lets their kernels overlap).

`--pipelines` adds the data-pipeline comparison (BatchAugmenter vs torchvision + DataLoader).

Run: .venv/bin/python bench/trainer.py [--device cpu|cuda] [--threads N] [--precision fp32,bf16]
     [--presets tiny,vit_s] [--steps N] [--peak-tflops T] [--concurrent N] [--compile]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # run as a script from anywhere

from data_pipeline import PILDataset  # noqa: E402

from trainers.augment import BatchAugmenter, batch_indices  # noqa: E402
from trainers.config import TrainConfig  # noqa: E402
from trainers.datasets import load_dataset  # noqa: E402
from trainers.modes import MODES, used_fields  # noqa: E402
from trainers.training import Run, train_step  # noqa: E402

BATCH = 64  # the paper's batch size
N_IMAGES = 10_000  # images the pipeline bench draws from


class Shape(NamedTuple):
    """One benchmarked model size: the preset, what it is fed, and the batch."""

    preset: str
    channels: int
    size: int
    classes: int
    batch: int
    overrides: dict


SHAPES = {
    "tiny": Shape("tiny", 1, 28, 10, 64, {}),
    "vit_s": Shape("vit_s", 3, 32, 10, 64, {}),
    "vit_s224": Shape("vit_s", 3, 224, 100, 256, {"img_size": 224, "patch_size": 16}),
}

# Dense peak TFLOP/s (no sparsity) by device name fragment: (bf16/fp16 tensor cores, fp32 without
# TF32). Sources: NVIDIA datasheets (H100/H200 SXM, A100 SXM, L4, RTX 4090).
GPU_PEAKS = {
    "H200": (989.0, 67.0),
    "H100": (989.0, 67.0),
    "A100": (312.0, 19.5),
    "L4": (121.0, 30.3),
    "4090": (165.2, 82.6),
}


def device_peak(device: torch.device, precision: str, threads: int) -> tuple[float | None, str]:
    """(peak TFLOP/s, how it was found) for `precision` on `device`."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for fragment, (low, fp32) in GPU_PEAKS.items():
            if fragment in name:
                peak = fp32 if precision == "fp32" else low
                return peak, f"{name}: {peak:g} TFLOP/s dense {precision} (datasheet)"
        return None, f"{name}: not in the table; pass --peak-tflops"
    capability = torch.backends.cpu.get_cpu_capability()  # AVX2, AVX512, ...
    flops_per_cycle = 64 if "512" in capability else 32  # fp32 FMA: 2 units x lanes x 2
    ghz = _cpu_ghz()
    peak = threads * ghz * flops_per_cycle / 1e3
    note = (
        f"CPU {capability}: {threads} threads x {ghz:.2f} GHz x {flops_per_cycle} fp32 FLOP/cycle"
        f" = {peak:.3f} TFLOP/s"
    )
    if precision != "fp32" and "512" not in capability:
        note += " (no bf16 units: bf16 runs through fp32 arithmetic plus conversions)"
    return peak, note


def _cpu_ghz() -> float:
    try:
        with open("/proc/cpuinfo") as info:
            mhz = [float(line.split(":")[1]) for line in info if line.startswith("cpu MHz")]
        return max(mhz) / 1e3
    except (OSError, ValueError, IndexError):
        return 2.5


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Bench:
    """One mode's `Run`, stepping on pre-made batches (augmentation is timed separately)."""

    def __init__(self, mode: str, shape: Shape, device: torch.device, precision: str, **cfg):
        values = dict(
            mode=mode,
            preset=shape.preset,
            batch_size=shape.batch,
            epochs=1000,
            device=device.type,
            precision=precision,
            **shape.overrides,
            **cfg,
        )
        config = TrainConfig.from_dict(used_fields(mode, values))
        torch.manual_seed(0)
        self.run = Run.create(config, shape.classes, shape.channels, shape.size, device, 64_000)
        for module in self.run.networks.values():
            module.train()
        self.steps = 0

    def step(self, x: Tensor, y: Tensor) -> None:
        train_step(self.run, x, y, epoch=0, step=self.steps)  # epoch 0: the full hint weight
        self.steps += 1

    def flops(self, x: Tensor, y: Tensor) -> int:
        """Model FLOPs of one training step (forward + backward), counted on a real step."""
        with FlopCounterMode(display=False) as counter:
            self.step(x, y)
        return counter.get_total_flops()


def _batches(shape: Shape, device: torch.device, count: int = 4) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(count):
        x = torch.randn(shape.batch, shape.channels, shape.size, shape.size, generator=g)
        y = torch.randint(0, shape.classes, (shape.batch,), generator=g)
        out.append((x.to(device), y.to(device)))
    return out


def bench_modes(
    shape_name: str,
    device: torch.device,
    precision: str,
    timed: int,
    warmup: int,
    peak: float | None,
    compile_: bool = False,
) -> dict[str, float]:
    """Median seconds per step of every mode; prints the table. Returns {mode: seconds}."""
    shape = SHAPES[shape_name]
    modes = list(MODES)
    benches = {m: _Bench(m, shape, device, precision, compile=compile_) for m in modes}
    batches = _batches(shape, device)
    flops = {m: b.flops(*batches[0]) for m, b in benches.items()}
    block = 5 if device.type == "cuda" else 1  # steps per timed sample
    samples: dict[str, list[float]] = {m: [] for m in modes}
    cpu_samples: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(warmup + timed):
        for mode, bench in benches.items():
            _sync(device)
            started, started_cpu = time.perf_counter(), time.process_time()
            for j in range(block):
                bench.step(*batches[(i + j) % len(batches)])
            _sync(device)
            if i >= warmup:
                samples[mode].append((time.perf_counter() - started) / block)
                cpu_samples[mode].append((time.process_time() - started_cpu) / block)
    seconds = {m: statistics.median(t) for m, t in samples.items()}
    cpu_seconds = {m: statistics.median(t) for m, t in cpu_samples.items()}
    params = {m: sum(b.run.mode.parameter_counts().values()) for m, b in benches.items()}
    print(
        f"\n{shape_name} on {device.type} ({precision}): {shape.channels}x{shape.size}x"
        f"{shape.size}, {shape.classes} classes, batch {shape.batch}"
        + (", compiled" if compile_ else "")
    )
    print(
        f"  {'mode':<8}{'params':>11}{'ms/step':>10}{'img/s':>9}{'GFLOP':>9}{'TFLOP/s':>9}"
        f"{'MFU':>8}{'x vit':>7}{'cpu ms':>9}"
    )
    for mode in modes:
        sec, achieved = seconds[mode], flops[mode] / seconds[mode] / 1e12
        mfu = f"{achieved / peak:.1%}" if peak else "n/a"
        print(
            f"  {mode:<8}{params[mode]:>11,}{sec * 1e3:>10.1f}{shape.batch / sec:>9.1f}"
            f"{flops[mode] / 1e9:>9.1f}{achieved:>9.3f}{mfu:>8}"
            f"{sec / seconds.get('vit', sec):>7.2f}{cpu_seconds[mode] * 1e3:>9.1f}"
        )
    print(
        "  (cpu ms: this process's CPU time per step, all threads summed: on a loaded machine "
        "wall time measures the load as much as the step)"
    )
    return seconds


def _packing_worker(args: tuple) -> float:
    """One process of the packing bench: images/s of the tiny shared step for `seconds`."""
    device_name, precision, seconds, threads, start_at = args
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    shape = SHAPES["tiny"]
    bench = _Bench("shared", shape, device, precision)
    batches = _batches(shape, device)
    for i in range(3):  # warm-up
        bench.step(*batches[i % len(batches)])
    _sync(device)
    while time.time() < start_at:  # all processes start timing together
        time.sleep(0.01)
    started, steps = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        for _ in range(10):
            bench.step(*batches[steps % len(batches)])
            steps += 1
        _sync(device)
    return steps * shape.batch / (time.perf_counter() - started)


def bench_packing(device: torch.device, precision: str, processes: int, seconds: float,
                  threads: int) -> None:  # fmt: skip
    """Aggregate img/s of `processes` tiny shared trainings sharing `device`, over one alone."""
    context = multiprocessing.get_context("spawn")
    results = {}
    for n in (1, processes):
        start_at = time.time() + 20 + 2 * n  # after every process has built its model
        with context.Pool(n) as pool:
            rates = pool.map(
                _packing_worker, [(str(device), precision, seconds, threads, start_at)] * n
            )
        results[n] = rates
    alone, packed = sum(results[1]), sum(results[processes])
    print(
        f"\npacking on {device.type} ({precision}), tiny shared, {seconds:.0f} s each: 1 process "
        f"{alone:.0f} img/s; {processes} processes {packed:.0f} img/s together "
        f"({', '.join(f'{r:.0f}' for r in results[processes])}) = {packed / alone:.2f}x one alone"
    )


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


def bench_pipelines(preset: str, timed: int, warmup: int) -> dict[str, float]:
    """Median seconds of (make the batch + shared-mode step), per way of making the batch."""
    data = _data(preset)
    images, labels, augment = data.images, data.labels, data.augmenter()
    bench = _Bench("shared", SHAPES[preset], torch.device("cpu"), "fp32")
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
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (cuda if present)")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="torch threads (default: all cores). On a machine busy with other jobs use 1: "
        "OpenMP threads spin-waiting on a descheduled peer can make a step 30x slower",
    )
    parser.add_argument("--precision", default=None, help="comma list; default: fp32,bf16")
    parser.add_argument("--presets", default=None, help="comma list of " + ", ".join(SHAPES))
    parser.add_argument("--steps", type=int, default=None, help="timed samples per mode")
    parser.add_argument("--quick", action="store_true", help="few steps: a rough look")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the device's peak")
    parser.add_argument("--compile", action="store_true", help="torch.compile every mode")
    parser.add_argument("--concurrent", type=int, default=0, help="packing: N processes")
    parser.add_argument("--concurrent-seconds", type=float, default=30.0)
    parser.add_argument("--pipelines", action="store_true", help="also the data pipelines (CPU)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    auto = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(auto if args.device == "auto" else args.device)
    precisions = (args.precision or "fp32,bf16").split(",")
    default_presets = "tiny,vit_s,vit_s224" if device.type == "cuda" else "tiny,vit_s"
    presets = (args.presets or default_presets).split(",")
    timed = args.steps or (5 if args.quick else 20)
    warmup = 2 if args.quick else 3
    print(
        f"torch {torch.__version__}, {device}, {torch.get_num_threads()} threads on "
        f"{os.cpu_count()} cores; median of {timed} samples after {warmup} warm-up; "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    ratios: dict[str, float] = {}
    for precision in precisions:
        peak, note = device_peak(device, precision, args.threads)
        peak = args.peak_tflops or peak
        print(f"\npeak for MFU: {note}" + (" (overridden)" if args.peak_tflops else ""))
        for preset in presets:
            s = bench_modes(preset, device, precision, timed, warmup, peak, args.compile)
            key = f"{preset} {precision}"
            if {"vit", "shared"} <= set(s):
                ratios[f"{key}: shared / vit"] = s["shared"] / s["vit"]
            if {"vit", "agent", "shared"} <= set(s):
                ratios[f"{key}: shared / (vit + agent)"] = s["shared"] / (s["vit"] + s["agent"])
    print("\nratios of step times (paper: shared/vit ~1.15x on GPUs; shared/(vit+agent) <= 1:")
    print("the coupling costs nothing beyond the hint)")
    for name, value in ratios.items():
        print(f"  {name:<40}{value:>6.2f}x")
    if args.concurrent:
        bench_packing(
            device, precisions[-1], args.concurrent, args.concurrent_seconds, args.threads
        )
    if args.pipelines:
        for preset in ("tiny", "vit_s"):
            pipelines = bench_pipelines(preset, timed, warmup)
            base = pipelines["preloaded_float"]
            for name in ("batch_augmenter", "torchvision_w0", "torchvision_w2"):
                print(f"  {preset} {name}/float step: {pipelines[name] / base:.2f}x")


if __name__ == "__main__":
    main()
