"""Per-trial overhead of the whole orchestration stack on near-instant trials, next to plain Ray.

    .venv/bin/python bench/orchestration.py [--trials 16] [--epochs 20] [--concurrency 2]
                                            [--repeats 3] [--quick] [--profile out.prof]

Three configurations run the same workload: `--trials` trials that each report `--epochs` epochs
at once (val_acc from a formula, no training), `--concurrency` at a time, one CPU each:

    ours         `study.runner.run_study` on a fresh SQLite file: per-arm TPE (`ArmSearch`),
                 `PerArmASHA` and the `StoreCallback` writing every epoch to SQL. Space
                 `bench_lr` (defined here: one arm, lr log-uniform, the plain runs' search
                 problem), grace = epochs: ASHA has no rung below max_t, so nothing is pruned;
                 final_seeds 0; no report.
    plain        `tune.Tuner` + Ray's `OptunaSearch` (in-memory) + `ASHAScheduler` (grace = max_t,
                 as ours) with Ray's default `reuse_actors=False`.
    plain-reuse  the same with `reuse_actors=True` (ours reuses actors too).

Fairness: Ray is started (`ray.init(num_cpus=concurrency)`) before and shut down after each timed
run, outside the timed region, for all three; `run_study`'s own `ray_session` is replaced by a
no-op for that. All three run with the environment `study.ray_tune.ray_session` sets
(TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=1: no CSV/JSON/TensorBoard files per trial), `verbose=0`
and their Ray results in a temp dir. Runs are interleaved (ours, plain, plain-reuse, ours, ...) so
load from other processes spreads over all three; each figure is the median of `--repeats`.

"ours" is given twice: the whole `run_study` call (opening the store, provenance, loading the
dataset, creating the Optuna studies, the summary) and only its `Tuner.fit` (`run_trials`), which
is what the plain figures measure.

`--profile FILE` additionally runs "ours" once under cProfile (driver process) and prints the top
functions by cumulative time and the SQL statements executed per trial.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# What study.ray_tune.ray_session sets, for every configuration alike (before Ray is imported).
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import logging  # noqa: E402

import ray  # noqa: E402
from ray import tune  # noqa: E402
from ray.tune.schedulers import ASHAScheduler  # noqa: E402
from ray.tune.search.optuna import OptunaSearch  # noqa: E402

from search_spaces import Budget, Float, SearchSpace, register_space  # noqa: E402
from study import ray_tune  # noqa: E402
from study.plan import StudyConfig  # noqa: E402
from study.runner import run_study  # noqa: E402
from study.status import TrialStatus  # noqa: E402

TARGET_RATIO = 1.25  # the aim: ours <= 1.25x plain Ray with reuse_actors=True


@register_space
def bench_lr() -> SearchSpace:
    """The plain runs' search problem (lr, log-uniform, one arm), so both sides run the same TPE
    workload; what differs is only the bookkeeping."""
    return SearchSpace(
        name="bench_lr",
        description="benchmark only: one arm, lr",
        arms={"mode": ("vit",)},
        search=(Float("lr", 1e-4, 1e-2, log=True),),
        budgets={"smoke": Budget(trials_per_arm=16, epochs=20, grace_epochs=20)},
    )


def curve(lr: float, epoch: int) -> float:
    """A made-up learning curve: rises with epochs, best near lr = 1e-3."""
    return 0.9 - 0.05 * abs(math.log10(lr) + 3.0) - 0.4 / (epoch + 1)


# --- ours -----------------------------------------------------------------------------------------


def instant_train(cfg, report, data=None) -> dict:
    """bootstudy's `train_fn` contract, minus the training: report every epoch at once."""
    value = 0.0
    for epoch in range(1, cfg.epochs + 1):
        value = curve(cfg.lr, epoch)
        report({"epoch": epoch, "val_acc": value, "train_loss": 1.0 - value})
    return {"val_acc": value, "test_acc": value - 0.01}


@contextlib.contextmanager
def _timed_fit(seconds: list[float]) -> Iterator[None]:
    """Time `study.ray_tune.run_trials` (the Tuner.fit) inside run_study; skip `ray_session`."""
    run_trials, session = ray_tune.run_trials, ray_tune.ray_session

    def timed(**kwargs):
        start = time.perf_counter()
        try:
            return run_trials(**kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    ray_tune.run_trials = timed
    ray_tune.ray_session = lambda address, **_: lambda: None  # Ray is up already, untimed
    try:
        yield
    finally:
        ray_tune.run_trials, ray_tune.ray_session = run_trials, session


def run_ours(args, workdir: Path, tag: str, tensorboard: bool = False) -> dict[str, float]:
    config = StudyConfig(
        space="bench_lr",
        name=f"bench-{tag}",
        preset="smoke",
        storage=f"sqlite:///{workdir / 'study.db'}",
        trials_per_arm=args.trials,
        epochs=args.epochs,
        grace_epochs=args.epochs,
        final_seeds=0,
        concurrency=args.concurrency,
        results_dir=str(workdir),
        tensorboard=tensorboard,
    )
    fit: list[float] = []
    with _timed_fit(fit):
        start = time.perf_counter()
        summary = run_study(
            config,
            command="bench/orchestration.py",
            train_fn=instant_train,
            out=io.StringIO(),
        )
        total = time.perf_counter() - start
    if summary.counts != {TrialStatus.COMPLETE.value: args.trials}:
        raise RuntimeError(f"ours: expected {args.trials} COMPLETE trials, got {summary.counts}")
    return {"total": total, "fit": sum(fit)}


# --- plain Ray Tune -------------------------------------------------------------------------------


def plain_trial(config: dict) -> None:
    for epoch in range(1, config["epochs"] + 1):
        tune.report({"epoch": epoch, "val_acc": curve(config["lr"], epoch)})


def run_plain(args, workdir: Path, reuse_actors: bool) -> dict[str, float]:
    searcher = OptunaSearch(metric="val_acc", mode="max", seed=0)
    scheduler = ASHAScheduler(
        time_attr="epoch", metric="val_acc", mode="max", max_t=args.epochs, grace_period=args.epochs
    )  # as ours: no pruning
    tuner = tune.Tuner(
        tune.with_resources(plain_trial, {"cpu": 1}),
        param_space={"lr": tune.loguniform(1e-4, 1e-2), "epochs": args.epochs},
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=args.trials,
            max_concurrent_trials=args.concurrency,
            reuse_actors=reuse_actors,
        ),
        run_config=tune.RunConfig(name="plain", storage_path=str(workdir / "ray"), verbose=0),
    )
    start = time.perf_counter()
    results = tuner.fit()
    seconds = time.perf_counter() - start
    done = [r for r in results if r.metrics.get("epoch") == args.epochs]
    if len(done) != args.trials or results.errors:
        raise RuntimeError(f"plain: {len(done)} of {args.trials} trials reached the last epoch")
    return {"total": seconds, "fit": seconds}


# --- the comparison -------------------------------------------------------------------------------


def with_ray(args, fn: Callable[[Path], dict[str, float]]) -> dict[str, float]:
    """Run `fn` in a fresh temp dir with Ray started before and stopped after (both untimed)."""
    with tempfile.TemporaryDirectory(prefix="bench_orch_") as tmp:
        ray.init(
            num_cpus=args.concurrency,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.ERROR,
        )
        try:
            return fn(Path(tmp))
        finally:
            ray.shutdown()


def profile_ours(args, path: str) -> None:
    import cProfile
    import pstats

    import sqlalchemy as sa

    statements: list[str] = []

    def count(conn, cursor, statement, *_):
        statements.append(statement.split(None, 1)[0].upper())

    sa.event.listen(sa.engine.Engine, "before_cursor_execute", count)
    profiler = cProfile.Profile()
    try:
        profiler.enable()
        times = with_ray(args, lambda tmp: run_ours(args, tmp, "profile"))
        profiler.disable()
    finally:
        sa.event.remove(sa.engine.Engine, "before_cursor_execute", count)
    profiler.dump_stats(path)
    print(
        f"\nprofile of ours (driver, cProfile; whole run {times['total']:.2f} s, "
        f"fit {times['fit']:.2f} s), saved to {path}:"
    )
    kinds = {k: statements.count(k) for k in sorted(set(statements))}
    print(
        f"SQL statements: {len(statements)} = {len(statements) / args.trials:.0f} per trial, "
        f"{len(statements) / (args.trials * args.epochs):.1f} per reported epoch: {kinds}"
    )
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=16, help="trials per configuration")
    p.add_argument("--epochs", type=int, default=20, help="reports per trial")
    p.add_argument("--concurrency", type=int, default=2, help="trials at once (= Ray's CPUs)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration")
    p.add_argument("--quick", action="store_true", help="one repeat")
    p.add_argument("--profile", metavar="FILE", help="also cProfile one run of ours to FILE")
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also run ours with --tensorboard (Ray's TBX logger: an event file per trial)",
    )
    args = p.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)

    runs = {
        "ours": lambda tmp, i: run_ours(args, tmp, str(i)),
        "plain": lambda tmp, i: run_plain(args, tmp, reuse_actors=False),
        "plain-reuse": lambda tmp, i: run_plain(args, tmp, reuse_actors=True),
    }
    if args.tensorboard:
        runs["ours-tb"] = lambda tmp, i: run_ours(args, tmp, f"tb{i}", tensorboard=True)
    seconds: dict[str, list[dict[str, float]]] = {name: [] for name in runs}
    for i in range(repeats):
        for name, fn in runs.items():
            result = with_ray(args, lambda tmp, fn=fn, i=i: fn(tmp, i))
            seconds[name].append(result)
            print(
                f"  run {i + 1}/{repeats} {name:<12} {result['total']:6.2f} s "
                f"(fit {result['fit']:.2f} s)",
                flush=True,
            )

    n = args.trials
    per_trial = {
        name: {k: statistics.median(r[k] for r in results) / n for k in ("total", "fit")}
        for name, results in seconds.items()
    }
    reference = per_trial["plain-reuse"]["fit"]
    print(
        f"\n{n} trials x {args.epochs} reports, concurrency {args.concurrency}, median of "
        f"{repeats}; Ray started outside the timed region for all three"
    )
    print(f"{'':<24} {'s/trial':>8} {'vs plain-reuse':>15}")
    rows = [
        ("ours, whole run_study", per_trial["ours"]["total"]),
        ("ours, Tuner.fit only", per_trial["ours"]["fit"]),
        ("plain (reuse_actors=F)", per_trial["plain"]["fit"]),
        ("plain-reuse (reuse=T)", reference),
    ]
    if args.tensorboard:
        rows.insert(1, ("ours + TensorBoard", per_trial["ours-tb"]["total"]))
    for label, value in rows:
        print(f"{label:<24} {value:8.3f} {value / reference:14.2f}x")
    if args.tensorboard:
        tb = per_trial["ours-tb"]["total"] / per_trial["ours"]["total"]
        print(f"ours + TensorBoard / ours = {tb:.2f}x (whole run_study, medians)")
    ratio = per_trial["ours"]["total"] / reference
    verdict = "meets" if ratio <= TARGET_RATIO else "misses"
    print(f"ours (whole) / plain-reuse = {ratio:.2f}x: {verdict} the aim of <= {TARGET_RATIO}x")

    if args.profile:
        profile_ours(args, args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
