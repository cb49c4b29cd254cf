"""Plotly figures of a report. Every function takes plain frames/dicts and returns a `go.Figure`.

Figures stay small: one compact template instead of plotly's default (~8 kB per figure), float32
arrays (plotly encodes them as base64), WebGL scatter for many points, and the curves of an arm
joined into one trace separated by gaps. Every study-derived string is HTML-escaped before it
reaches plotly, whose labels understand a little HTML.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from study.status import Phase, TrialStatus
from trainers.modes import MODES

__all__ = [
    "PALETTE",
    "TEMPLATE",
    "arm_colors",
    "select_curves",
    "accuracy_vs_fraction",
    "param_effects",
    "best_per_arm",
    "learning_curves",
    "best_so_far",
    "importance_heatmap",
    "parallel_coordinates",
    "slices",
    "cost_bars",
    "difference_heatmap",
    "main_effects",
]

# Okabe-Ito (colour-blind safe) first, then Tableau for studies with many arms.
PALETTE = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
    "#4E79A7", "#F28E2B", "#59A14F", "#E15759", "#76B7B2", "#EDC948", "#B07AA1", "#FF9DA7",
]  # fmt: skip
MODE_ORDER = list(MODES)  # the mode registry's order: vit, agent, shared, joint, then any added
_AXIS = dict(gridcolor="#e6e6e6", linecolor="#555", zeroline=False, automargin=True)
TEMPLATE = go.layout.Template(
    layout=dict(
        font=dict(family="system-ui, -apple-system, Segoe UI, sans-serif", size=12),
        paper_bgcolor="white",
        plot_bgcolor="white",
        colorway=PALETTE,
        xaxis=_AXIS,
        yaxis=_AXIS,
        margin=dict(l=60, r=20, t=40, b=50),
        hoverlabel=dict(namelength=-1),
        legend=dict(bgcolor="rgba(255,255,255,0.8)"),
    )
)
STATUS_COLORS = {
    TrialStatus.COMPLETE.value: "#009E73",
    TrialStatus.PRUNED.value: "#E69F00",
    TrialStatus.FAILED.value: "#D55E00",
    TrialStatus.REUSED.value: "#56B4E9",
    TrialStatus.RUNNING.value: "#999999",
}
esc = html.escape


def _f32(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _pct(values) -> np.ndarray:
    """Accuracies (fractions) as float32 percent: what every accuracy axis shows."""
    return _f32(np.asarray(values, dtype=float) * 100)


def _figure(title: str, height: int = 420, **layout) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(template=TEMPLATE, title=dict(text=title, x=0.01), height=height, **layout)
    return fig


MAX_COLUMNS = 3  # panels per row: at 1,000 px, more make each panel too narrow for its labels


def _panels(names: Sequence[str], title: str, height_per_row: int = 330, **kwargs) -> go.Figure:
    """One panel per name, at most MAX_COLUMNS a row; each panel's name is its x axis title (a
    subplot title would overlap its neighbours' when the page is narrow)."""
    cols = max(1, min(len(names), MAX_COLUMNS))
    rows = max(1, -(-len(names) // cols))
    fig = make_subplots(rows=rows, cols=cols, horizontal_spacing=0.08,
                        vertical_spacing=min(0.3, 0.6 / rows), **kwargs)  # fmt: skip
    fig.update_layout(template=TEMPLATE, height=90 + height_per_row * rows,
                      title=dict(text=title, x=0.01))  # fmt: skip
    for k, name in enumerate(names):
        fig.update_xaxes(title=esc(str(name)), row=k // cols + 1, col=k % cols + 1)
    return fig


def count_axis(largest: float, start: int = 0) -> dict:
    """Axis settings for a count (epochs, trials): whole-number ticks only, at most ~10 of them
    (a step of 1, 2, 5, 10, 20, 50, ...), never 0.5 or 1.5."""
    step = 1
    while largest / step > 10:
        step = step * 5 // 2 if str(step)[0] == "2" else step * 2  # 1, 2, 5, 10, 20, 50, ...
    return dict(tickmode="linear", tick0=start, dtick=step, tickformat="d")


def time_unit(seconds: float) -> tuple[str, float]:
    """The unit a reader takes in at a glance for durations up to `seconds`: (name, seconds in
    one), e.g. ("min", 60) for a 2-minute study rather than 0.03 trial-hours."""
    if seconds < 120:
        return "s", 1.0
    if seconds < 120 * 60:
        return "min", 60.0
    return "h", 3600.0


def log_ticks(low: float, high: float) -> list[float]:
    """Tick values in a log-scaled parameter's own units, 1-2-5 per decade over [low, high]
    (thinned to 1 per decade over wide ranges), never fewer than the two ends."""
    if not (np.isfinite(low) and np.isfinite(high)) or low <= 0 or high <= 0:
        return []
    first, last = int(np.floor(np.log10(low))), int(np.ceil(np.log10(high)))
    mantissas = (1, 2, 5) if last - first <= 3 else (1,)
    ticks = [m * 10.0**e for e in range(first, last + 1) for m in mantissas]
    inside = [t for t in ticks if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]
    return inside if len(inside) >= 2 else [low, high]


def tick_label(value: float) -> str:
    """A parameter value as a tick label: 0.001, 3e-05, 250 (3 significant digits, no 'nan')."""
    if not np.isfinite(value):
        return "not set"
    return f"{value:.3g}"


def arm_colors(arms: Sequence[str]) -> dict[str, str]:
    return {a: PALETTE[i % len(PALETTE)] for i, a in enumerate(arms)}


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def select_curves(trials: pd.DataFrame, limit: int = 300, seed: int = 0) -> list[int]:
    """Trial ids whose curves are drawn: every final-phase run and each arm's best completed search
    trials first, then a seeded sample of the rest, `limit` in all."""
    if len(trials) <= limit:
        return [int(i) for i in trials["id"]]
    final = trials[trials["phase"] == Phase.FINAL]
    done = trials[(trials["phase"] == Phase.SEARCH) & (trials["status"] == TrialStatus.COMPLETE)]
    per_arm = max(1, (limit // 3 - len(final)) // max(trials["arm"].nunique(), 1))
    best = done.sort_values("best_val_acc", ascending=False).groupby("arm").head(per_arm)
    chosen = list(dict.fromkeys([*final["id"], *best["id"]]))[:limit]
    rest = trials[~trials["id"].isin(chosen)]
    chosen += list(rest["id"].sample(min(limit - len(chosen), len(rest)), random_state=seed))
    return [int(i) for i in chosen]


def accuracy_vs_fraction(rows: pd.DataFrame, y_label: str) -> go.Figure:
    """Accuracy vs data fraction (log x), one line per mode, 95% band where seeds allow.

    rows: mode, fraction, mean, lo, hi, n (lo/hi NaN without an interval)."""
    fig = _figure("Accuracy vs data fraction", height=460)
    modes = sorted(rows["mode"].unique(), key=lambda m: (m not in MODE_ORDER, MODE_ORDER.index(m)
                   if m in MODE_ORDER else 0, str(m)))  # fmt: skip
    for i, mode in enumerate(modes):
        g = rows[rows["mode"] == mode].sort_values("fraction")
        color = PALETTE[i % len(PALETTE)]
        banded = g[g["lo"].notna()]
        if len(banded):
            fig.add_trace(
                go.Scatter(
                    x=_f32(np.r_[banded["fraction"], banded["fraction"][::-1]]),
                    y=_pct(np.r_[banded["hi"], banded["lo"][::-1]]),
                    fill="toself", fillcolor=_rgba(color, 0.15), line=dict(width=0), mode="lines",
                    hoverinfo="skip", showlegend=False, legendgroup=esc(str(mode)),
                )
            )  # fmt: skip
        fig.add_trace(
            go.Scatter(
                x=_f32(g["fraction"]), y=_pct(g["mean"]), mode="lines+markers",
                name=esc(str(mode)), legendgroup=esc(str(mode)), line=dict(color=color, width=2),
                customdata=np.c_[g["n"].to_numpy(dtype=np.float32)],
                hovertemplate="%{x:.3g} data: %{y:.1f}% (n=%{customdata[0]})<extra>%{fullData.name}"
                "</extra>",
            )
        )  # fmt: skip
    ticks = sorted(rows["fraction"].unique())
    fig.update_xaxes(type="log", title="fraction of training data", tickvals=ticks,
                     ticktext=[f"{100 * t:g}%" for t in ticks])  # fmt: skip
    fig.update_yaxes(title=y_label)
    return fig


def param_effects(search: pd.DataFrame, params: dict[str, str], colors: dict[str, str]):
    """final val_acc against each searched parameter in its own units (log axis where it was
    searched on a log scale), points per arm (box per value when the parameter is categorical);
    hovering a point names its trial. params: {name: "log" | "linear" | "categorical"}."""
    names = list(params)
    cols = max(1, min(len(names), MAX_COLUMNS))
    fig = _panels(names, "final val acc per value", shared_yaxes=True)
    fig.update_layout(boxmode="group")
    for arm, g in search.groupby("arm", sort=False):
        for k, p in enumerate(names):
            where = dict(row=k // cols + 1, col=k % cols + 1)
            x = g["params"].map(lambda d, p=p: d.get(p))
            ok = x.notna()
            common = dict(name=esc(arm), legendgroup=esc(arm), showlegend=k == 0)
            if params[p] == "categorical":
                fig.add_trace(
                    go.Box(x=[esc(str(v)) for v in x[ok]], y=_pct(g["final_val_acc"][ok]),
                           marker_color=colors[arm], boxpoints=False, **common),
                    **where,
                )  # fmt: skip
            else:
                fig.add_trace(
                    go.Scattergl(x=_f32(x[ok].astype(float)), y=_pct(g["final_val_acc"][ok]),
                                 mode="markers", marker=dict(color=colors[arm], size=5,
                                 opacity=0.6), customdata=g["number"][ok].to_numpy(np.float32),
                                 hovertemplate="trial %{customdata}: " + esc(p)
                                 + "=%{x:.3g}, %{y:.1f}%<extra>" + esc(arm) + "</extra>",
                                 **common),
                    **where,
                )  # fmt: skip
                if params[p] == "log":
                    fig.update_xaxes(type="log", dtick="D2", **where)  # 1, 2, 5 per decade
    for k in range(0, len(names), cols):
        fig.update_yaxes(title="final val acc (%)", row=k // cols + 1, col=1)
    return fig


def _sideways(labels: Sequence[str]) -> bool:
    """Bars lie down (labels on the y axis) when their labels are too long to sit under them:
    tilted labels of designed arms ran off the figure at a laptop's width."""
    return max((len(str(x)) for x in labels), default=0) > 14


def best_per_arm(summary: pd.DataFrame, colors: dict[str, str], y_label: str) -> go.Figure:
    """Bars of each arm's result from zero, with the 95% interval as its (asymmetric) error bar
    where n >= 2. summary: arm, mean, lo, hi, n."""
    sideways = _sideways(summary["arm"])
    height = 120 + 34 * len(summary) if sideways else 420
    fig = _figure("Result per arm", height=max(height, 260))
    has = summary["hi"].notna()
    up = np.where(has, summary["hi"] - summary["mean"], 0.0)
    down = np.where(has, summary["mean"] - summary["lo"], 0.0)
    arms, values = [esc(a) for a in summary["arm"]], _pct(summary["mean"])
    error = dict(type="data", symmetric=False, array=_pct(up), arrayminus=_pct(down), visible=True)
    fig.add_trace(
        go.Bar(
            x=values if sideways else arms, y=arms if sideways else values,
            orientation="h" if sideways else "v",
            marker_color=[colors[a] for a in summary["arm"]],
            **({"error_x": error} if sideways else {"error_y": error}),
            customdata=np.c_[_pct(summary["lo"]), _pct(summary["hi"])],
            text=[f"n={n}" for n in summary["n"]], textposition="inside",
            insidetextanchor="start", showlegend=False,  # n at the foot: clear of the error bar
            hovertemplate=("%{y}: %{x:.1f}%" if sideways else "%{x}: %{y:.1f}%")
            + ", 95% CI [%{customdata[0]:.1f}, %{customdata[1]:.1f}] (%{text})<extra></extra>",
        )
    )  # fmt: skip
    value_axis = dict(title=y_label, range=[0, 100])  # a bar's length is its value: from zero
    if sideways:
        fig.update_xaxes(**value_axis)
        fig.update_yaxes(autorange="reversed")  # the first arm on top, as in the tables
    else:
        fig.update_yaxes(**value_axis)
    return fig


def learning_curves(
    curves: pd.DataFrame,
    trials: pd.DataFrame,
    colors: dict[str, str],
    rungs: Sequence[int],
    max_epochs: int,
) -> go.Figure:
    """val_acc (solid) and val_acc_agent (dashed) against epoch, one WebGL trace per arm and metric,
    curves separated by NaN gaps; ASHA rungs as dotted vertical lines."""
    fig = _figure("Learning curves", height=520)
    arm_of = dict(zip(trials["id"], trials["arm"], strict=True))
    number_of = dict(zip(trials["id"], trials["number"], strict=True))
    curves = curves.assign(arm=curves["trial_id"].map(arm_of))
    order = {a: i for i, a in enumerate(colors)}  # legend in the page's arm order
    groups = sorted(
        curves.groupby(["arm", "name"], sort=False),
        key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][1] != "val_acc"),
    )
    for (arm, metric), g in groups:
        xs, ys, numbers = [], [], []
        for trial_id, c in g.groupby("trial_id", sort=False):
            xs.append(np.r_[c["epoch"].to_numpy(dtype=float), np.nan])
            ys.append(np.r_[c["value"].to_numpy(dtype=float) * 100, np.nan])
            numbers.append(np.full(len(c) + 1, number_of.get(trial_id, -1), dtype=np.float32))
        agent = metric != "val_acc"
        fig.add_trace(
            go.Scattergl(
                x=_f32(np.concatenate(xs)), y=_f32(np.concatenate(ys)), mode="lines",
                name=esc(f"{arm} ({metric})") if agent else esc(arm), legendgroup=esc(arm),
                line=dict(color=colors.get(arm, "#444"), width=1,
                          dash="dash" if agent else "solid"),
                opacity=0.55, connectgaps=False, customdata=np.concatenate(numbers),
                # the study's trial number: the one the terminal and the tables show
                hovertemplate="trial %{customdata}, epoch %{x}: %{y:.1f}%<extra>"
                + esc(f"{arm} ({metric})") + "</extra>",
            )
        )  # fmt: skip
    for r in rungs:
        fig.add_vline(x=r, line=dict(color="#888", width=1, dash="dot"))
    fig.update_xaxes(title="epoch", range=[0.5, max_epochs + 0.5], **count_axis(max_epochs))
    fig.update_yaxes(title="validation accuracy (%)")
    return fig


def best_so_far(search: pd.DataFrame, colors: dict[str, str]) -> go.Figure:
    """Cumulative best validation accuracy against the trial number within each arm; hovering a
    point names the study's trial number."""
    fig = _figure("Best so far", height=420)
    longest = 1
    for arm, g in search.groupby("arm", sort=False):
        g = g.sort_values("number")
        longest = max(longest, len(g))
        fig.add_trace(
            # lines+markers: an arm with one completed trial is one point, which a line hides
            go.Scattergl(x=_f32(np.arange(1, len(g) + 1)), y=_pct(g["best_val_acc"].cummax()),
                         mode="lines+markers", name=esc(arm),
                         line=dict(color=colors[arm], shape="hv"),
                         customdata=np.c_[g["number"].to_numpy(np.float32),
                                          _pct(g["best_val_acc"])],
                         hovertemplate="completed trial %{x} of the arm: trial %{customdata[0]}, "
                         "%{customdata[1]:.1f}%; best so far %{y:.1f}%<extra>" + esc(arm)
                         + "</extra>")
        )  # fmt: skip
    fig.update_xaxes(title="completed search trials in the arm", **count_axis(longest, start=1))
    fig.update_yaxes(title="best val acc so far (%)")
    return fig


def importance_heatmap(
    importances: dict[str, dict[str, float]], used: dict[str, int] | None = None
) -> go.Figure:
    """PED-ANOVA importance: arms down (each with the completed trials it was computed from),
    parameters across."""
    arms = list(importances)
    used = used or {}
    params = sorted({p for imp in importances.values() for p in imp})
    z = np.array([[importances[a].get(p, np.nan) for p in params] for a in arms], dtype=float)
    fig = _figure("Parameter importance (PED-ANOVA)", height=max(260, 90 + 28 * len(arms)))
    labels = [esc(f"{a} ({used[a]} trials)" if a in used else a) for a in arms]
    fig.add_trace(
        go.Heatmap(z=_f32(np.round(z, 3)), x=[esc(p) for p in params], y=labels,
                   colorscale="Blues", zmin=0, zmax=1, texttemplate="%{z:.2f}",
                   colorbar=dict(title="importance"))
    )  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    return fig


def parallel_coordinates(
    search: pd.DataFrame, params: dict[str, str], limit: int = 1000, seed: int = 0
) -> go.Figure:
    """Arm, each parameter and final val acc, coloured by the latter. Log-scaled parameters are
    drawn on a log10 axis labelled in their own units (0.0001, 0.001, ...); a trial that did not
    set a conditional parameter sits below its axis at "not set"."""
    done = search[search["final_val_acc"].notna()]
    if len(done) > limit:
        top = done.nlargest(limit // 5, "final_val_acc")
        rest = done.drop(top.index)
        done = pd.concat([top, rest.sample(limit - len(top), random_state=seed)])
    arms = list(dict.fromkeys(done["arm"]))
    dims = [dict(label="arm", values=_f32(done["arm"].map({a: i for i, a in enumerate(arms)})),
                 tickvals=list(range(len(arms))), ticktext=[esc(a) for a in arms])]  # fmt: skip
    for p, kind in params.items():
        raw = done["params"].map(lambda d, p=p: d.get(p))
        if kind == "categorical":
            codes = {
                c: i for i, c in enumerate(dict.fromkeys(str(v) for v in raw if v is not None))
            }
            values = [codes[str(v)] if v is not None else -1 for v in raw]
            ticks = list(codes.values()) + ([-1] if -1 in values else [])
            text = [esc(c) for c in codes] + (["not set"] if -1 in values else [])
            dims.append(dict(label=esc(p), values=_f32(values), tickvals=ticks, ticktext=text))
            continue
        v = raw.astype(float).to_numpy()
        finite = v[np.isfinite(v) & ((v > 0) if kind == "log" else True)]
        if finite.size == 0:
            continue
        lo, hi = float(finite.min()), float(finite.max())
        if kind == "log":
            where, ticks = np.log10(v, where=v > 0, out=np.full_like(v, np.nan)), log_ticks(lo, hi)
            tickvals = [float(np.log10(t)) for t in ticks]
            span = (np.log10(hi) - np.log10(lo)) or 1.0
            floor = float(np.log10(lo)) - 0.1 * span
        else:
            where = v
            tickvals = [float(t) for t in np.linspace(lo, hi, 5)] if hi > lo else [lo]
            ticks = tickvals
            floor = lo - 0.1 * ((hi - lo) or 1.0)
        missing = ~np.isfinite(where)
        if missing.any():  # not set: below the axis, labelled, never "nan"
            where = np.where(missing, floor, where)
            tickvals, ticks = [floor, *tickvals], [math.nan, *ticks]
        dims.append(dict(label=esc(p), values=_f32(where), tickvals=tickvals,
                         ticktext=[tick_label(t) for t in ticks]))  # fmt: skip
    acc = _pct(done["final_val_acc"])
    dims.append(dict(label="final val acc (%)", values=acc))
    longest = max((len(a) for a in arms), default=10)
    left = min(60 + 6 * longest, 320)  # room for the arm names left of the first axis
    fig = _figure("Parallel coordinates", height=480, margin=dict(l=left, r=60, t=90, b=30))
    fig.add_trace(
        go.Parcoords(dimensions=dims, line=dict(color=acc, colorscale="Viridis", showscale=True))
    )
    return fig


def slices(
    search: pd.DataFrame,
    params: dict[str, str],
    colors: dict[str, str],
    limit: int = 2000,
    title: str = "Slices of the most important parameters",
) -> go.Figure:
    """final val acc against each of the given (most important) parameters, points per arm."""
    done = search[search["final_val_acc"].notna()]
    if len(done) > limit:
        done = done.sample(limit, random_state=0)
    fig = param_effects(done, params, colors)
    fig.update_layout(title=dict(text=esc(title), x=0.01))
    return fig


def cost_bars(trials: pd.DataFrame) -> go.Figure:
    """Trial time per arm, stacked by status, in the unit that suits the study (s, min or h)."""
    seconds = trials.pivot_table(index="arm", columns="status", values="trial_seconds",
                                 aggfunc="sum", sort=False).fillna(0)  # fmt: skip
    unit, scale = time_unit(float(seconds.sum(axis=1).max()) if len(seconds) else 0.0)
    sideways = _sideways(seconds.index)
    height = max(260, 120 + 34 * len(seconds)) if sideways else 420
    fig = _figure(f"Trial time per arm and status ({unit})", height=height, barmode="stack")
    order = [s for s in STATUS_COLORS if s in seconds.columns] + [
        s for s in seconds.columns if s not in STATUS_COLORS
    ]
    arms = [esc(a) for a in seconds.index]
    for status in order:
        values = _f32(seconds[status] / scale)
        fig.add_trace(
            go.Bar(x=values if sideways else arms, y=arms if sideways else values,
                   orientation="h" if sideways else "v", name=esc(status),
                   marker_color=STATUS_COLORS.get(status, "#777"),
                   hovertemplate=("%{y}: %{x:.3g} " if sideways else "%{x}: %{y:.3g} ") + unit
                   + "<extra>" + esc(status) + "</extra>")
        )  # fmt: skip
    if sideways:
        fig.update_xaxes(title=f"trial time ({unit})", rangemode="tozero")
        fig.update_yaxes(autorange="reversed")
    else:
        fig.update_yaxes(title=f"trial time ({unit})", rangemode="tozero")
    return fig


def difference_heatmap(
    diffs: pd.DataFrame, row: str, column: str, title: str, row_order: Sequence | None = None
) -> go.Figure:
    """Paired difference (points) per cell, diverging colours centred on 0; each cell's text
    gives the difference, its 95% CI and n. diffs: `effects.paired_differences` rows."""
    rows = list(row_order or sorted(diffs[row].unique(), key=str))
    rows = [r for r in rows if r in set(diffs[row])]
    cols = sorted(diffs[column].unique())
    z = np.full((len(rows), len(cols)), np.nan, dtype=np.float32)
    text = [["" for _ in cols] for _ in rows]
    for _, d in diffs.iterrows():
        i, j = rows.index(d[row]), cols.index(d[column])
        z[i, j] = d["diff"] * 100
        ci = (
            f"[{d['lo'] * 100:+.1f}, {d['hi'] * 100:+.1f}]" if d["lo"] == d["lo"] else "no interval"
        )
        text[i][j] = f"{d['diff'] * 100:+.1f}<br>{ci}<br>n={int(d['n'])}"
    span = float(np.nanmax(np.abs(z))) if np.isfinite(z).any() else 1.0
    fig = _figure(title, height=140 + 90 * len(rows))
    fig.add_trace(
        go.Heatmap(
            z=z, x=[esc(_label(c, column)) for c in cols], y=[esc(str(r)) for r in rows],
            text=[[esc(t).replace("&lt;br&gt;", "<br>") for t in r] for r in text],
            texttemplate="%{text}", colorscale="RdBu", zmid=0, zmin=-span, zmax=span,
            colorbar=dict(title="points"), hovertemplate="%{y}, %{x}: %{text}<extra></extra>",
        )
    )  # fmt: skip
    fig.update_xaxes(title=esc(column), type="category")
    fig.update_yaxes(title=esc(row), type="category")
    return fig


def main_effects(effects: pd.DataFrame, y_label: str) -> go.Figure:
    """One panel per factor: the mean result at each of its values with its 95% interval as an
    asymmetric error bar. A categorical factor's levels are points (no line joins "vit" to
    "shared"); a numeric factor's are joined in the order of their values."""
    factors = list(dict.fromkeys(effects["factor"]))
    fig = _panels(factors, "Main effects", shared_yaxes=True, height_per_row=300)
    cols = max(1, min(len(factors), MAX_COLUMNS))
    for k, factor in enumerate(factors):
        where = dict(row=k // cols + 1, col=k % cols + 1)
        g = effects[effects["factor"] == factor]
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in g["value"])
        if numeric:
            g = g.sort_values("value")
        has = g["lo"].notna()
        up = np.where(has, (g["hi"] - g["mean"]) * 100, 0.0)
        down = np.where(has, (g["mean"] - g["lo"]) * 100, 0.0)
        fig.add_trace(
            go.Scatter(
                x=[esc(_label(v, factor)) for v in g["value"]], y=_pct(g["mean"]),
                mode="lines+markers" if numeric else "markers", marker=dict(size=9),
                error_y=dict(type="data", symmetric=False, array=_f32(up), arrayminus=_f32(down),
                             visible=True),
                showlegend=False, line=dict(color=PALETTE[0]),
                customdata=np.c_[g["n"].to_numpy(np.float32)],
                hovertemplate="%{x}: %{y:.1f}% (n=%{customdata[0]})<extra></extra>",
            ),
            **where,
        )  # fmt: skip
        fig.update_xaxes(type="category", **where)
    for k in range(0, len(factors), cols):
        fig.update_yaxes(title=y_label, row=k // cols + 1, col=1)
    return fig


def _label(value, factor: str) -> str:
    if factor == "data_fraction" and isinstance(value, float):
        return f"{100 * value:g}%"
    return str(value)
