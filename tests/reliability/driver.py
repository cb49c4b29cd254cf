"""A study driver for the reliability suite: `run_study` through the real command-line plumbing
(`run_cli`: exit codes, one-line errors), with stand-in trainers so a kill can be timed.

    python tests/reliability/driver.py STORAGE RESULTS_DIR NAME [--resume] [--trainer slow]
        [--epochs 4] [--trials 3] [--final-seeds 0] [--seconds-per-epoch 0.5] [--pid-dir DIR]
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from study.plan import StudyConfig  # noqa: E402
from study.testing import curve_trainer, curve_value  # noqa: E402
from trainers.cli import run_cli  # noqa: E402


def _faulty(config) -> bool:
    """The corner of the space where the fault strikes: about 2 trials in 3 (TPE's first trials
    are random), so 4 trials miss it only about 1 time in 80."""
    return config.lr > 1e-3 or config.weight_decay > 0.02


def raising_trainer(config, report, data=None, seconds_per_epoch=0.0):
    """Faulty configs raise in epoch 2 (a bug in one corner of the space); others learn."""
    if _faulty(config):
        report({"epoch": 1, "val_acc": 0.1, "train_loss": 2.3})
        raise RuntimeError("a trial that raises")
    return curve_trainer(config, report, data, seconds_per_epoch)


def nan_trainer(config, report, data=None, seconds_per_epoch=0.0):
    """Faulty configs diverge: the loss and val_acc of epoch 2 are NaN, then it raises."""
    if _faulty(config):
        report({"epoch": 1, "val_acc": 0.1, "train_loss": 2.3})
        report({"epoch": 2, "val_acc": math.nan, "train_loss": math.nan})
        from trainers.errors import NonFiniteLoss

        raise NonFiniteLoss(2, 3, {"cls_vit": math.nan})
    return curve_trainer(config, report, data, seconds_per_epoch)


def hanging_trainer(config, report, data=None, seconds_per_epoch=0.0):
    """Faulty configs hang in epoch 2 inside one C call (a deadlock in a collective, say)."""
    if _faulty(config):
        report({"epoch": 1, "val_acc": curve_value(config, 1), "train_loss": 2.3})
        time.sleep(3600)
    return curve_trainer(config, report, data, seconds_per_epoch)


def spinning_trainer(config, report, data=None, seconds_per_epoch=0.0):
    """Faulty configs never finish epoch 2, in Python (a data loader waiting forever, say)."""
    if _faulty(config):
        report({"epoch": 1, "val_acc": curve_value(config, 1), "train_loss": 2.3})
        while True:
            time.sleep(0.05)
    return curve_trainer(config, report, data, seconds_per_epoch)


def flaky_trainer(config, report, data=None, seconds_per_epoch=0.0, marks=None):
    """Faulty configs raise in epoch 1 of their first attempt only (a lost GPU, a full /tmp): a
    retry (--retries) completes them. `marks` is where each config notes its first attempt."""
    mark = Path(marks, f"attempted-{config.lr}-{config.weight_decay}")
    if _faulty(config) and not mark.exists():
        mark.touch()
        report({"epoch": 1, "val_acc": 0.1, "train_loss": 2.3})
        raise RuntimeError("a flaky trial: fails once")
    return curve_trainer(config, report, data, seconds_per_epoch)


def pid_recording(trainer, directory: str):
    """`trainer`, writing its worker's pid into `directory` first: tests look for survivors."""

    def train(config, report, data=None, seconds_per_epoch=0.0):
        Path(directory, str(os.getpid())).touch()
        return trainer(config, report, data, seconds_per_epoch)

    return train


TRAINERS = {
    "curve": curve_trainer,
    "raising": raising_trainer,
    "nan": nan_trainer,
    "hanging": hanging_trainer,
    "spinning": spinning_trainer,
    "flaky": flaky_trainer,
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("storage")
    p.add_argument("results")
    p.add_argument("name")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--trainer", default="curve", choices=sorted(TRAINERS))
    p.add_argument("--seconds-per-epoch", type=float, default=0.5)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--final-seeds", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=2)
    p.add_argument("--modes", default="vit,shared")
    p.add_argument("--extra", action="append", default=[], help="StudyConfig KEY=JSON")
    p.add_argument("--pid-dir", help="trials write their worker's pid here")
    args = p.parse_args(argv)
    import json

    extra = {k: json.loads(v) for k, v in (e.split("=", 1) for e in args.extra)}
    config = StudyConfig.from_dict(
        dict(
            space="data_fraction",
            name=args.name,
            preset="smoke",
            storage=args.storage,
            results_dir=args.results,
            trials_per_arm=args.trials,
            epochs=args.epochs,
            grace_epochs=args.epochs,  # no ASHA cuts: every trial's fate is the fault's
            final_seeds=args.final_seeds,
            concurrency=args.concurrency,
            arm_values={"mode": args.modes.split(","), "data_fraction": [0.1]},
            **extra,
        )
    )
    trainer = TRAINERS[args.trainer]
    if args.trainer == "flaky":
        trainer = functools.partial(trainer, marks=args.results)
    if args.pid_dir:
        trainer = pid_recording(trainer, args.pid_dir)
    train = functools.partial(trainer, seconds_per_epoch=args.seconds_per_epoch)
    from study.runner import run_study

    print(f"driver pid {os.getpid()}", flush=True)
    run_study(config, command=" ".join(sys.argv), resume=args.resume, train_fn=train)
    return 0


if __name__ == "__main__":
    run_cli(main)
