"""Effects of a designed study: paired differences per cell, and main effects per factor.

A paired difference compares two arms that differ in one factor (e.g. mode shared vs vit) and agree
on every other factor (a cell), seed by seed: replicates with the same seed saw the same images in
the same order, so the difference of each pair removes what the seed alone does.

>>> import pandas as pd
>>> results = pd.DataFrame({"arm": ["a", "a", "b", "b"], "value": [0.70, 0.72, 0.74, 0.75],
...                         "seed": [1, 2, 1, 2]})
>>> arms = {"a": {"size": "tiny", "mode": "vit"}, "b": {"size": "tiny", "mode": "shared"}}
>>> d = paired_differences(results, arms, "mode", "shared", "vit").iloc[0]
>>> round(d["diff"], 3), d["n"], d["size"]
(0.035, 2, 'tiny')
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from reports.stats import summarize, t_interval

__all__ = ["paired_differences", "main_effects", "FEW_SEEDS", "few_seeds_note"]

FEW_SEEDS = 3  # fewer replicates than this: the interval is too wide to claim an effect


def few_seeds_note(n: int) -> str:
    """Words, not only a number, for an arm or a cell with fewer than FEW_SEEDS replicates."""
    if n >= FEW_SEEDS:
        return ""
    return "one seed: no interval" if n == 1 else f"only {n} seeds: too few to claim an effect"


def paired_differences(
    results: pd.DataFrame,
    arms: dict[str, dict],
    factor: str,
    treatment: object,
    control: object,
    confidence: float = 0.95,
) -> pd.DataFrame:
    """treatment - control per cell of the other factors, paired by seed.

    `results` has columns arm, value, seed (`stats.arm_results`); `arms` maps an arm to its
    factors. One row per cell where both arms have results: the other factors' values, `diff`
    (mean of the per-seed differences), `lo`, `hi` (Student-t interval of that mean; NaN with
    fewer than two pairs), `n` (pairs), `treatment_mean`, `control_mean`, `note`. Seeds that only
    one arm ran are left out: an unpaired value would bring the seed effect back.
    """
    by_cell: dict[tuple, dict[object, str]] = {}
    others = [k for k in dict.fromkeys(k for f in arms.values() for k in f) if k != factor]
    for arm, factors in arms.items():
        if factor not in factors:
            continue
        key = tuple(factors.get(k) for k in others)
        by_cell.setdefault(key, {})[factors[factor]] = arm
    rows = []
    for key, level_arms in by_cell.items():
        if treatment not in level_arms or control not in level_arms:
            continue
        t = _by_seed(results, level_arms[treatment])
        c = _by_seed(results, level_arms[control])
        seeds = sorted(set(t) & set(c))
        if not seeds:
            continue
        diffs = np.array([t[s] - c[s] for s in seeds])
        ci = t_interval(diffs, confidence)
        lo, hi = ci if ci else (math.nan, math.nan)
        rows.append(
            {
                **dict(zip(others, key, strict=True)),
                "diff": float(diffs.mean()),
                "lo": lo,
                "hi": hi,
                "n": len(seeds),
                "treatment_mean": float(np.mean([t[s] for s in seeds])),
                "control_mean": float(np.mean([c[s] for s in seeds])),
                "note": few_seeds_note(len(seeds)),
            }
        )
    return pd.DataFrame(rows)


def _by_seed(results: pd.DataFrame, arm: str) -> dict[int, float]:
    rows = results[results["arm"] == arm]
    # one value per seed (a seed run twice, e.g. reused, counts once: its mean)
    return rows.groupby("seed")["value"].mean().to_dict()


def main_effects(results: pd.DataFrame, arms: dict[str, dict], ofat: bool = False) -> pd.DataFrame:
    """Marginal means: for every factor with two or more values, the mean result of the arms at
    each value, its 95% interval over those replicates, and n.

    Columns factor, value, mean, lo, hi, n. By default a value's mean averages over every arm that
    has it (the other factors' levels included: a factorial's marginal mean). With `ofat=True`
    (a one-factor-at-a-time design) a value's arms are those with every *other* factor at the base
    cell's value, so each level is the base cell or the one arm that varies this factor; the base
    value of each factor is the one most arms share.
    """
    factors: dict[str, list] = {}
    for f in arms.values():
        for k, v in f.items():
            factors.setdefault(k, [])
            if v not in factors[k]:
                factors[k].append(v)
    base = {
        k: max(values, key=lambda v, k=k: sum(f.get(k) == v for f in arms.values()))
        for k, values in factors.items()
    }
    rows = []
    for name, values in factors.items():
        if len(values) < 2:
            continue
        for value in values:
            members = [
                a
                for a, f in arms.items()
                if f.get(name) == value
                and (not ofat or all(f.get(k) == base[k] for k in factors if k != name))
            ]
            x = results.loc[results["arm"].isin(members), "value"].to_numpy(float)
            if x.size == 0:
                continue
            s = summarize(x)
            lo, hi = s.ci if s.ci else (math.nan, math.nan)
            rows.append(
                {"factor": name, "value": value, "mean": s.mean, "lo": lo, "hi": hi, "n": s.n}
            )
    return pd.DataFrame(rows)
