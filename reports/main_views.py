"""The report's main view: a registry of the figures a space can ask for (`SearchSpace.main_view`).

The study plan stores the space's choice on the study record; the report looks it up here. A view
takes the loaded study and the per-arm summary (arm, its factors, mean, lo, hi, n) and returns a
title, a caption stating its finding in numbers, and its parts (HTML and figures). A new view is
one decorated function::

    @MAIN_VIEWS.register("my_view")
    def my_view(s, df):
        return "2. My view", "arm X is best ...", (figures.best_per_arm(df, s.colors, "acc"),)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pandas as pd
import plotly.graph_objects as go

from reports import effects, figures, wording
from reports.load import LoadedStudy
from study.progress import duration_text
from study.status import Phase, TrialStatus
from trainers.registry import Registry

__all__ = [
    "MAIN_VIEWS",
    "MainView",
    "summary_frame",
    "source_label",
    "percent",
    "duration",
    "compact",
]

MainView = Callable[[LoadedStudy, pd.DataFrame], tuple[str, str, tuple[str | go.Figure, ...]]]
MAIN_VIEWS: Registry[MainView] = Registry("report main view")


def percent(x: float, digits: int = 1) -> str:
    return f"{x * 100:.{digits}f}%"


def duration(seconds: float) -> str:
    """A running time a reader takes in at a glance: 42 s, 7.5 min, 3.2 h (never "0.0 h")."""
    return duration_text(seconds, minute_digits=1)


def compact(params: dict) -> str:
    """Searched values as `name=value` with floats to 3 significant digits, not 16."""
    return ", ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items())
    )


def source_label(sources: set[str]) -> str:
    """What the arms' numbers are: final-run test accuracies, or optimistic validation ones."""
    if sources == {"test"}:
        return "test accuracy of the final runs"
    if sources == {"val"}:
        return "best val accuracy, optimistic (selected on validation)"
    return (
        "test accuracy where final runs exist, else optimistic val accuracy "
        "(selected on validation)"
    )


def summary_frame(s: LoadedStudy) -> pd.DataFrame:
    """A row per arm with a result: arm, its factors, mean, lo, hi (NaN without an interval), n."""
    rows = []
    for arm, sm in s.summaries.items():
        lo, hi = sm.ci if sm.ci else (math.nan, math.nan)
        rows.append({"arm": arm, **s.arms[arm], "mean": sm.mean, "lo": lo, "hi": hi, "n": sm.n})
    return pd.DataFrame(rows)


@MAIN_VIEWS.register("arms")
def arms(s: LoadedStudy, df: pd.DataFrame):
    """Final val acc against each searched parameter, and each arm's result with its interval."""
    label = source_label(set(s.sources.values()))
    best = df.sort_values("mean", ascending=False)
    top = best.iloc[0]
    caption = f"{top['arm']} is best at {percent(top['mean'])} (n={int(top['n'])})"
    if len(best) > 1:
        second = best.iloc[1]
        caption += f", {(top['mean'] - second['mean']) * 100:.1f} points ahead of {second['arm']}"
    caption += f"; {label}."
    search = s.trials[
        (s.trials["phase"] == Phase.SEARCH) & (s.trials["status"] == TrialStatus.COMPLETE)
    ]
    parts: list[go.Figure] = []
    if s.param_kinds and len(search):
        parts.append(figures.param_effects(search, s.param_kinds, s.colors))
    parts.append(figures.best_per_arm(df, s.colors, "accuracy (%)"))
    return "2. Parameters and arms", caption, tuple(parts)


@MAIN_VIEWS.register("fraction_curve")
def fraction_curve(s: LoadedStudy, df: pd.DataFrame):
    """Accuracy against data fraction (log axis), one line per mode with its confidence band."""
    # The factor is TrainConfig's `data_fraction`; plots and captions call it `fraction`.
    df = df.rename(columns={"data_fraction": "fraction"})
    if not {"mode", "fraction"} <= set(df.columns):
        return arms(s, df)  # e.g. a study run with one fraction: nothing to draw a curve over
    df["fraction"] = df["fraction"].astype(float)
    label = source_label(set(s.sources.values()))
    y = "test accuracy (%)" if label.startswith("test accuracy of") else "accuracy (%)"
    figure = figures.accuracy_vs_fraction(df, y)
    return "2. Accuracy vs data fraction", _fraction_caption(s, label), (figure,)


def _fraction_caption(s: LoadedStudy, label: str) -> str:
    """ "At 10% data, shared beats vit by 6.1 points, 95% CI [...], n=3": the largest paired gap
    of any mode over vit, its verb following its interval (`reports.wording`)."""
    gaps = []
    modes = dict.fromkeys(f.get("mode") for f in s.arms.values())
    for mode in modes:
        if mode in (None, "vit"):
            continue
        diffs = effects.paired_differences(s.results, s.arms, "mode", mode, "vit")
        for _, d in diffs.iterrows():
            if "data_fraction" in d:
                gaps.append((float(d["diff"]), float(d["data_fraction"]), mode, d))
    if not gaps:
        return f"No fraction has both vit and another mode with the same seeds yet; {label}."
    gap, fraction, mode, d = max(gaps, key=lambda g: g[0])
    claim = wording.contrast(mode, "vit", gap, d["lo"], d["hi"], int(d["n"]))
    text = f"At {100 * fraction:g}% data, {claim}"
    if gap <= 0:
        text = f"No mode is above vit at any fraction; the closest: {text[0].lower()}{text[1:]}"
    fractions = len({g[1] for g in gaps})
    if fractions > 1:
        text += f" (the largest gap of {fractions} fractions)"
    return f"{text}; {label}."
