"""The numbers a report states: per-arm results, intervals, tests against the baseline, Holm.

>>> [round(x, 4) for x in t_interval([1, 2, 3, 4])]  # 2.5 +- t(0.975, 3) * s / sqrt(4)
[0.4457, 4.5543]
>>> holm([0.01, 0.04, 0.03])
[0.03, 0.06, 0.06]
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import optuna
import pandas as pd
from scipy import stats as sps

from study.status import HAS_RESULT, Phase

__all__ = [
    "Summary",
    "Comparison",
    "t_interval",
    "summarize",
    "format_interval",
    "compare",
    "holm",
    "arm_results",
    "compare_arms",
    "asha_saved_share",
    "param_importances",
]

NO_INTERVAL = "n={n}, no interval"


@dataclass(frozen=True)
class Summary:
    """n, mean, sample standard deviation and 95% t-interval (None when n < 2)."""

    n: int
    mean: float
    std: float | None
    ci: tuple[float, float] | None


@dataclass(frozen=True)
class Comparison:
    """An arm against its baseline: difference of means, p-value, which test, Holm-adjusted p."""

    arm: str
    baseline: str
    diff: float
    p: float | None
    test: str
    p_holm: float | None = None


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """Student-t confidence interval for the mean; None with fewer than two values."""
    x = np.asarray(values, dtype=float)
    if x.size < 2:
        return None
    sem = x.std(ddof=1) / math.sqrt(x.size)
    if sem == 0:
        return (float(x.mean()), float(x.mean()))
    lo, hi = sps.t.interval(confidence, x.size - 1, loc=x.mean(), scale=sem)
    return (float(lo), float(hi))


def summarize(values: Sequence[float]) -> Summary:
    x = np.asarray(values, dtype=float)
    return Summary(
        n=int(x.size),
        mean=float(x.mean()) if x.size else math.nan,
        std=float(x.std(ddof=1)) if x.size >= 2 else None,
        ci=t_interval(x),
    )


def format_interval(s: Summary, scale: float = 100.0, digits: int = 1) -> str:
    """ "[80.1, 83.4]" in percent, or "n=1, no interval" rather than inventing one."""
    if s.ci is None:
        return NO_INTERVAL.format(n=s.n)
    return f"[{s.ci[0] * scale:.{digits}f}, {s.ci[1] * scale:.{digits}f}]"


def compare(
    values: Sequence[float],
    baseline: Sequence[float],
    seeds: Sequence[int] | None = None,
    baseline_seeds: Sequence[int] | None = None,
) -> tuple[float, float | None, str]:
    """(mean difference, p-value, test name). Paired t-test when both sides have the same seeds,
    Welch's t-test otherwise; no p-value when either side has fewer than two values."""
    a, b = np.asarray(values, dtype=float), np.asarray(baseline, dtype=float)
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return diff, None, f"none (n={a.size} vs {b.size})"
    if (
        seeds is not None
        and baseline_seeds is not None
        and len(set(seeds)) == len(seeds) == a.size
        and sorted(seeds) == sorted(baseline_seeds)
    ):
        order_a, order_b = np.argsort(seeds), np.argsort(baseline_seeds)
        p = sps.ttest_rel(a[order_a], b[order_b]).pvalue
        test = "paired t (seeds)"
    else:
        p = sps.ttest_ind(a, b, equal_var=False).pvalue
        test = "Welch t"
    return diff, (None if np.isnan(p) else float(p)), test


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment (None passes through and does not count as a test)."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    m = len(idx)
    out: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))  # monotone in the sorted order
        out[i] = running
    return out


def arm_results(trials: pd.DataFrame) -> pd.DataFrame:
    """The values each arm is judged on: columns arm, value, seed, source, params, trial_id.

    source "test": final-phase test accuracies (one per seed). Where an arm has none yet,
    source "val": the best validation accuracy of the arm's best search configuration (its seeds
    if it was run with several) -- optimistic, because it was selected on that same validation set.
    """
    frames = []
    for arm, g in trials.groupby("arm", sort=False):
        done = g["status"].isin(HAS_RESULT)
        final = g[(g["phase"] == Phase.FINAL) & done & g["test_acc"].notna()]
        if len(final):
            frames.append(_result_frame(arm, final, "test_acc", "test"))
            continue
        search = g[(g["phase"] == Phase.SEARCH) & done & g["best_val_acc"].notna()]
        if search.empty:
            continue
        key = search["config_hash"].fillna(search["params"].astype(str))
        best = search.groupby(key)["best_val_acc"].agg(["mean", "size"])
        chosen = best.sort_values(["mean", "size"], ascending=False).index[0]
        picked = search[key == chosen]
        frames.append(_result_frame(arm, picked, "best_val_acc", "val"))
    if not frames:
        return pd.DataFrame(columns=["arm", "value", "seed", "source", "params", "trial_id"])
    return pd.concat(frames, ignore_index=True)


def _result_frame(arm: str, rows: pd.DataFrame, column: str, source: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "arm": arm,
            "value": rows[column].to_numpy(dtype=float),
            "seed": rows["seed"].to_numpy(),
            "source": source,
            "params": rows["params"].to_numpy(),
            "trial_id": rows["id"].to_numpy(),
        }
    )


def compare_arms(results: pd.DataFrame, baselines: dict[str, str | None]) -> list[Comparison]:
    """Every arm against its baseline (the study plan's, from the study record); Holm across the
    arms that share one baseline."""
    by_arm = {a: g for a, g in results.groupby("arm", sort=False)}
    out: list[Comparison] = []
    for arm, base in baselines.items():
        if base is None or arm not in by_arm or base not in by_arm:
            continue
        a, b = by_arm[arm], by_arm[base]
        diff, p, test = compare(a["value"], b["value"], list(a["seed"]), list(b["seed"]))
        out.append(Comparison(arm=arm, baseline=base, diff=diff, p=p, test=test))
    adjusted: dict[int, float | None] = {}
    for base in {c.baseline for c in out}:
        family = [i for i, c in enumerate(out) if c.baseline == base]
        adjusted.update(zip(family, holm([out[i].p for i in family]), strict=True))
    return [
        Comparison(c.arm, c.baseline, c.diff, c.p, c.test, adjusted[i]) for i, c in enumerate(out)
    ]


def asha_saved_share(epochs_run: Sequence[float], max_epochs: int) -> float:
    """1 - (epochs trained) / (trials x max epochs): the share of the full budget ASHA saved."""
    e = np.asarray(epochs_run, dtype=float)
    if e.size == 0 or max_epochs <= 0:
        return 0.0
    return float(1 - np.nansum(e) / (e.size * max_epochs))


def param_importances(
    optuna_trials: pd.DataFrame, max_trials: int = 500, seed: int = 0, min_trials: int = 2
) -> tuple[dict[str, dict[str, float]], dict[str, str], dict[str, int]]:
    """PED-ANOVA importances per Optuna study from `Store.optuna_trials_frame`'s frame.

    Returns ({study: {param: importance}}, {study: why skipped}, {study: trials used}). Studies
    with more than `max_trials` completed trials are subsampled (uniformly, seeded) to stay fast;
    studies with fewer than `min_trials` are skipped (PED-ANOVA compares the top 10% of trials
    with the rest: from a handful of trials its ranking is noise).
    """
    dists = optuna_trials.attrs.get("distributions", {})
    result: dict[str, dict[str, float]] = {}
    skipped: dict[str, str] = {}
    used: dict[str, int] = {}
    for name, g in optuna_trials.groupby("study_name", sort=False):
        done = g[(g["state"] == "COMPLETE") & g["value"].notna()]  # Optuna's TrialState name
        params = [p for p in dists if p in g.columns and g[p].notna().any()]
        if len(done) < max(min_trials, 2):
            skipped[name] = f"{len(done)} completed trial(s), fewer than {max(min_trials, 2)}"
            continue
        if len(params) < 2:
            skipped[name] = "one searched parameter"
            continue
        if len(done) > max_trials:
            done = done.sample(max_trials, random_state=seed)
        used[name] = len(done)
        frozen = [
            optuna.trial.create_trial(
                params={p: _py(row[p]) for p in params if not _missing(row[p])},
                distributions={p: dists[p] for p in params if not _missing(row[p])},
                value=float(row["value"]),
            )
            for row in done.to_dict("records")
        ]
        verbosity = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "study created" per arm
        try:
            study = optuna.create_study(direction="maximize")
            study.add_trials(frozen)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                imp = optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.PedAnovaImportanceEvaluator()
                )
        finally:
            optuna.logging.set_verbosity(verbosity)
        result[name] = {p: float(v) for p, v in imp.items()}
    return result, skipped, used


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _py(v):
    return v.item() if isinstance(v, np.generic) else v
