"""How long a report takes for a big study, next to Optuna's own `trials_dataframe()`.

    .venv/bin/python bench/report_scale.py [--trials 10000] [--epochs 50] [--metrics 8]

Creates (once, cached in runs/bench/) a synthetic data_fraction study with `--trials` search trials
that all run `--epochs` epochs (no pruning: the largest metrics table for that many trials),
plus 3 final seeds per arm. Then prints: the report's build time (median of 3, in this process,
and the same for `python -m reports` in a fresh process, imports included), the HTML's size, and
the seconds `optuna.load_study(...).trials_dataframe()` takes for one arm's study and for all.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import optuna  # noqa: E402

from reports import build_report  # noqa: E402
from reports.synthetic import make_synthetic_study  # noqa: E402
from study.store import Store  # noqa: E402
from trainers.errors import BootstudyError  # noqa: E402

# 4 modes x 3 fractions = 12 arms, as in the figures the README quotes
ARM_VALUES = {"data_fraction": (0.1, 0.25, 1.0)}


def _ensure_study(db: Path, name: str, trials: int, epochs: int, metrics: int) -> str:
    url = f"sqlite:///{db}"
    if db.exists():
        try:
            with Store.open_existing(url) as store:
                store.get_study(name)
            print(f"using cached {db}")
            return url
        except BootstudyError:
            db.unlink()
    db.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    make_synthetic_study(
        url, name, trials, epochs, metrics, pruning=False, preset="gpu", arm_values=ARM_VALUES
    )
    print(f"created {db} in {time.perf_counter() - start:.1f} s")
    return url


def _timed(fn, repeat: int = 3) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--metrics", type=int, default=8)
    args = parser.parse_args()
    name = f"scale-{args.trials}x{args.epochs}x{args.metrics}"
    db = ROOT / "runs" / "bench" / f"{name}.db"
    url = _ensure_study(db, name, args.trials, args.epochs, args.metrics)
    with Store.open_existing(url) as store:
        study = store.get_study(name)
        n_trials, n_metrics = store.count_trials(study.id), store.count_metrics(study.id)
    arms = [f"{name}/{arm}" for arm in study.baselines]  # every arm's Optuna study
    size_mb = db.stat().st_size / 1e6
    print(f"{n_trials} trials, {n_metrics} metric rows, {len(arms)} arms, {size_mb:.0f} MB")

    out = ROOT / "runs" / "bench" / f"{name}.html"
    in_process = _timed(lambda: build_report(name, url, out))
    cli = _timed(
        lambda: subprocess.run(
            [sys.executable, "-m", "reports", "--study", name, "--storage", url, "--out", str(out)],
            cwd=ROOT, check=True, capture_output=True,
        )
    )  # fmt: skip
    build = statistics.median(in_process)
    print(f"report build, in process:       {build:6.2f} s  (runs: {_runs(in_process)})")
    print(
        f"python -m reports, fresh process: {statistics.median(cli):6.2f} s  (runs: {_runs(cli)})"
    )
    print(f"HTML size: {out.stat().st_size / 1e6:.2f} MB (plotly.js ~4.8 MB of it)")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    one = _timed(lambda: optuna.load_study(study_name=arms[0], storage=url).trials_dataframe(), 1)[
        0
    ]
    every = _timed(
        lambda: [optuna.load_study(study_name=a, storage=url).trials_dataframe() for a in arms], 1
    )[0]
    print(f"trials_dataframe(), one arm ({arms[0]}): {one:6.2f} s")
    print(f"trials_dataframe(), all {len(arms)} arms:     {every:6.2f} s")
    print(f"ratio all-arms trials_dataframe / report build: {every / build:.1f}x")


def _runs(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


if __name__ == "__main__":
    main()
