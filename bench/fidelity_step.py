"""What each departure from the released code costs per training step, side by side.

Figures, not tests. For the modes the `fidelity` space compares, times `train_step` (the trainer's
own step) of the released defaults and of each deviation that can change the step's cost (the
separate agent's convolution, clipping, weight-decay groups), interleaved step by step so the
machine's load hits them alike, and prints median wall and CPU milliseconds per step and each
deviation's ratio to the released step. Deviations of the loss arithmetic alone (hint_mean) cost
the same by construction and are left out.

Run: .venv/bin/python bench/fidelity_step.py [--presets tiny,vit_s] [--steps N] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]  # run as a script from anywhere

from trainer import SHAPES, _batches, _Bench  # noqa: E402

# (mode, label, TrainConfig changes): the released step first in each mode
VARIANTS = (
    ("agent", "released (dense conv)", {}),
    ("agent", "factored conv", {"agent_conv": "factored"}),
    ("joint", "released (dense agent)", {}),
    ("joint", "factored agent", {"agent_conv": "factored"}),
    ("joint", "clip 5, one norm", {"clip_grad": 5.0, "clip_scope": "all"}),
    ("joint", "clip 5, per network", {"clip_grad": 5.0}),
    ("joint", "decay exclusions", {"weight_decay_exclude": "norms_biases_tokens"}),
)


def bench(preset: str, steps: int, warmup: int) -> None:
    shape = SHAPES[preset]
    device = torch.device("cpu")
    benches = [
        (mode, label, _Bench(mode, shape, device, "fp32", **changes))
        for mode, label, changes in VARIANTS
    ]
    batches = _batches(shape, device)
    wall: dict[str, list[float]] = {label: [] for _, label, _ in benches}
    cpu: dict[str, list[float]] = {label: [] for _, label, _ in benches}
    for i in range(warmup + steps):
        for _, label, b in benches:
            started, started_cpu = time.perf_counter(), time.process_time()
            b.step(*batches[i % len(batches)])
            if i >= warmup:
                wall[label].append(time.perf_counter() - started)
                cpu[label].append(time.process_time() - started_cpu)
    print(f"\n{preset}: batch {shape.batch}, {steps} interleaved steps each (median)")
    print(
        f"{'mode':6} {'variant':24} {'params':>10} {'wall ms':>9} {'cpu ms':>9} {'x released':>10}"
    )
    released: dict[str, float] = {}
    for mode, label, b in benches:
        params = sum(p.numel() for m in b.run.networks.values() for p in m.parameters())
        w, c = statistics.median(wall[label]) * 1e3, statistics.median(cpu[label]) * 1e3
        released.setdefault(mode, c)
        print(f"{mode:6} {label:24} {params:>10,} {w:>9.1f} {c:>9.1f} {c / released[mode]:>10.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny", help="comma list of " + ", ".join(SHAPES))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (2: this machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for preset in args.presets.split(","):
        bench(preset, args.steps, warmup=3)


if __name__ == "__main__":
    main()
