"""How long a study will take here, from training steps timed on this machine (`--dry-run`).

Each arm's trainer config is built as its trials would build it, a few `train_step`s of it are
timed on this machine (one warm-up, then the median of `steps`), and the study's trials are
priced at that: every epoch's steps, the validation pass (a forward pass: about a third of a
step per batch) and the test pass of final runs, then spread over the trials that run at once.
Arms that differ only in what does not change a step (the data fraction) are timed once.

The figure is an upper bound for the search phase (no trial stopped early by ASHA) and leaves
out the self-supervised phases of `ssl_init` arms; it includes a fixed start-up (Ray, dataset).
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass

from study.plan import StudyConfig
from study.progress import duration_text as _duration
from trainers.config import TrainConfig

__all__ = ["Estimate", "estimate", "STARTUP_SECONDS", "TRIAL_OVERHEAD_SECONDS"]

STARTUP_SECONDS = 30.0  # Ray's start, the dataset's load, the report
TRIAL_OVERHEAD_SECONDS = 5.0  # a trial's start, reports and writes: smoke studies on 2 cores
PHASE_OVERHEAD_SECONDS = 5.0  # a phase's Tuner: its start, its searcher, its last writes
FORWARD_SHARE = 1 / 3  # a forward pass costs about a third of a training step (fwd + 2x bwd)


@dataclass(frozen=True)
class Estimate:
    seconds: float  # wall time of the whole study, at most (no trial pruned)
    trial_seconds: dict[str, float]  # arm -> one full-length trial's seconds
    step_ms: dict[str, float]  # arm -> measured milliseconds per training step
    concurrency: int  # trials at once
    trials: int  # trials in all (search + final)
    excludes_ssl: bool  # some arm has a self-supervised phase, not counted

    def describe(self) -> str:
        ssl = "; without the self-supervised phases" if self.excludes_ssl else ""
        return (
            f"estimated wall time here: at most {_duration(self.seconds)} for {self.trials} "
            f"trial(s), {self.concurrency} at once (from training steps timed on this machine"
            f"{ssl}; ASHA's early stops make the search shorter)"
        )


def estimate(config: StudyConfig, steps: int = 3) -> Estimate:
    """Time `steps` training steps of every arm's config on this machine; price the study."""
    import torch

    from trainers.datasets import load_dataset

    data = load_dataset(config.dataset, config.data_dir)
    threads = max(1, int(config.cpus_per_trial))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)  # what each trial gets (study.ray_tune: one thread per CPU)
    space, base = config.search_space, config.trainer_base()
    timed: dict[str, float] = {}
    trial_seconds, step_ms = {}, {}
    ssl = False
    try:
        for arm in config.arms():
            cfg = space.trial_config(config.preset, arm, {}, base, config.trial_overrides(arm))
            ssl = ssl or cfg.ssl_init != "none"
            key = repr(cfg.to_dict() | {"data_fraction": None, "seed": None})
            if key not in timed:
                timed[key] = _step_seconds(cfg, data, steps)
            step_ms[arm.name] = 1000 * timed[key]
            trial_seconds[arm.name] = _trial_seconds(cfg, data, timed[key])
    finally:
        torch.set_num_threads(previous)
    search = 0 if config.searchless else config.trials_per_arm
    per_trial = {arm: t + TRIAL_OVERHEAD_SECONDS for arm, t in trial_seconds.items()}
    at_once = _concurrency(config)
    # the final runs start once the search has ended: two phases, one after the other
    seconds = STARTUP_SECONDS + sum(
        _phase_seconds([t for t in per_trial.values() for _ in range(n)], at_once)
        for n in (search, config.final_seeds)
    )
    trials = len(trial_seconds) * (search + config.final_seeds)
    return Estimate(seconds, trial_seconds, step_ms, at_once, trials, ssl)


def _phase_seconds(trials: list[float], at_once: int) -> float:
    """One phase's wall time: its trials spread over `at_once` slots, never shorter than its
    longest trial (a lone last trial cannot share the machine); nothing when it has none."""
    if not trials:
        return 0.0
    return PHASE_OVERHEAD_SECONDS + max(sum(trials) / at_once, max(trials))


def _step_seconds(cfg: TrainConfig, data, steps: int) -> float:
    """Median seconds of one training step of `cfg` (after one warm-up step), on the CPU."""
    import torch

    from trainers.augment import BatchAugmenter
    from trainers.training import Run, train_step

    torch.manual_seed(cfg.seed)
    device = torch.device("cpu")
    img_size = cfg.img_size or data.image_size
    run = Run.create(cfg, data.num_classes, data.channels, img_size, device, cfg.batch_size)
    augment = BatchAugmenter.for_data(data, img_size, device)
    generator = torch.Generator().manual_seed(cfg.seed)
    images = data.train_images[: cfg.batch_size]
    labels = data.train_labels[: cfg.batch_size]
    times = []
    for step in range(steps + 1):
        x = augment(images, generator)
        started = time.perf_counter()
        train_step(run, x, labels, 0, step)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def _trial_seconds(cfg: TrainConfig, data, step: float) -> float:
    """One full-length trial: every epoch's steps and validation pass, then the test pass."""
    from trainers.splits import class_balanced_indices, train_val_split

    train_idx, val_idx = train_val_split(data.train_labels, cfg.val_fraction, cfg.split_seed)
    n_train = len(class_balanced_indices(data.train_labels[train_idx], cfg.data_fraction, 0))
    cap = cfg.max_eval_images or math.inf
    n_val, n_test = min(len(val_idx), cap), min(len(data.test_labels), cap)
    steps = math.ceil(n_train / cfg.batch_size)
    per_image = step / cfg.batch_size * FORWARD_SHARE
    return cfg.epochs * (steps * step + n_val * per_image) + n_test * per_image


def _concurrency(config: StudyConfig) -> int:
    if config.concurrency:
        return config.concurrency
    cpus = os.cpu_count() or 1
    return max(1, int(cpus // config.cpus_per_trial))
