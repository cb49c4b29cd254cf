"""Plotly figures of a report. Every function takes plain frames/dicts and returns a `go.Figure`.

Figures stay small: one compact template instead of plotly's default (~8 kB per figure), float32
arrays (plotly encodes them as base64), WebGL scatter for many points, and the curves of an arm
joined into one trace separated by gaps. Every study-derived string is HTML-escaped before it
reaches plotly, whose labels understand a little HTML.
"""

from __future__ import annotations

import html
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
    """final val_acc against each searched parameter, points per arm (box per value when the
    parameter is categorical). params: {name: "log" | "linear" | "categorical"}."""
    names = list(params)
    fig = make_subplots(
        rows=1,
        cols=max(len(names), 1),
        shared_yaxes=True,
        subplot_titles=[esc(n) for n in names],
        horizontal_spacing=0.04,
    )
    title = dict(text="final val acc per value", x=0.01)
    fig.update_layout(template=TEMPLATE, height=420, title=title, boxmode="group")
    for arm, g in search.groupby("arm", sort=False):
        for c, p in enumerate(names, start=1):
            x = g["params"].map(lambda d, p=p: d.get(p))
            ok = x.notna()
            common = dict(name=esc(arm), legendgroup=esc(arm), showlegend=c == 1)
            if params[p] == "categorical":
                fig.add_trace(
                    go.Box(x=[esc(str(v)) for v in x[ok]], y=_pct(g["final_val_acc"][ok]),
                           marker_color=colors[arm], boxpoints=False, **common),
                    row=1, col=c,
                )  # fmt: skip
            else:
                fig.add_trace(
                    go.Scattergl(x=_f32(x[ok].astype(float)), y=_pct(g["final_val_acc"][ok]),
                                 mode="markers", marker=dict(color=colors[arm], size=5,
                                 opacity=0.6), **common),
                    row=1, col=c,
                )  # fmt: skip
                if params[p] == "log":
                    fig.update_xaxes(type="log", row=1, col=c)
    fig.update_yaxes(title="final val acc (%)", row=1, col=1)
    return fig


def best_per_arm(summary: pd.DataFrame, colors: dict[str, str], y_label: str) -> go.Figure:
    """Bars of each arm's result with 95% CI error bars where n >= 2.
    summary: arm, mean, lo, hi, n."""
    fig = _figure("Result per arm", height=420)
    err = np.where(summary["hi"].notna(), summary["hi"] - summary["mean"], np.nan)
    fig.add_trace(
        go.Bar(
            x=[esc(a) for a in summary["arm"]], y=_pct(summary["mean"]),
            marker_color=[colors[a] for a in summary["arm"]],
            error_y=dict(type="data", array=_pct(np.nan_to_num(err)), visible=True),
            text=[f"n={n}" for n in summary["n"]], textposition="inside", showlegend=False,
            hovertemplate="%{x}: %{y:.1f}% (%{text})<extra></extra>",
        )
    )  # fmt: skip
    low = float(np.nanmin(summary["lo"].fillna(summary["mean"]))) * 100
    fig.update_yaxes(title=y_label, range=[max(0.0, low - 5), 100])
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
    curves = curves.assign(arm=curves["trial_id"].map(arm_of))
    order = {a: i for i, a in enumerate(colors)}  # legend in the page's arm order
    groups = sorted(
        curves.groupby(["arm", "name"], sort=False),
        key=lambda kv: (order.get(kv[0][0], len(order)), kv[0][1] != "val_acc"),
    )
    for (arm, metric), g in groups:
        xs, ys = [], []
        for _, c in g.groupby("trial_id", sort=False):
            xs.append(np.r_[c["epoch"].to_numpy(dtype=float), np.nan])
            ys.append(np.r_[c["value"].to_numpy(dtype=float) * 100, np.nan])
        agent = metric != "val_acc"
        fig.add_trace(
            go.Scattergl(
                x=_f32(np.concatenate(xs)), y=_f32(np.concatenate(ys)), mode="lines",
                name=esc(f"{arm} ({metric})") if agent else esc(arm), legendgroup=esc(arm),
                line=dict(color=colors.get(arm, "#444"), width=1,
                          dash="dash" if agent else "solid"),
                opacity=0.55, connectgaps=False,
            )
        )  # fmt: skip
    for r in rungs:
        fig.add_vline(x=r, line=dict(color="#888", width=1, dash="dot"))
    fig.update_xaxes(title="epoch", range=[0.5, max_epochs + 0.5])
    fig.update_yaxes(title="validation accuracy (%)")
    return fig


def best_so_far(search: pd.DataFrame, colors: dict[str, str]) -> go.Figure:
    """Cumulative best validation accuracy against the trial number within each arm."""
    fig = _figure("Best so far", height=420)
    for arm, g in search.groupby("arm", sort=False):
        g = g.sort_values("number")
        fig.add_trace(
            # lines+markers: an arm with one completed trial is one point, which a line hides
            go.Scattergl(x=_f32(np.arange(1, len(g) + 1)), y=_pct(g["best_val_acc"].cummax()),
                         mode="lines+markers", name=esc(arm),
                         line=dict(color=colors[arm], shape="hv"))
        )  # fmt: skip
    fig.update_xaxes(title="completed search trials in the arm")
    fig.update_yaxes(title="best val acc so far (%)")
    return fig


def importance_heatmap(importances: dict[str, dict[str, float]]) -> go.Figure:
    """PED-ANOVA importance: arms down, parameters across."""
    arms = list(importances)
    params = sorted({p for imp in importances.values() for p in imp})
    z = np.array([[importances[a].get(p, np.nan) for p in params] for a in arms], dtype=float)
    fig = _figure("Parameter importance (PED-ANOVA)", height=max(260, 60 + 28 * len(arms)))
    fig.add_trace(
        go.Heatmap(z=_f32(np.round(z, 3)), x=[esc(p) for p in params], y=[esc(a) for a in arms],
                   colorscale="Blues", zmin=0, zmax=1, texttemplate="%{z:.2f}",
                   colorbar=dict(title="importance"))
    )  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    return fig


def parallel_coordinates(
    search: pd.DataFrame, params: dict[str, str], limit: int = 1000, seed: int = 0
) -> go.Figure:
    """Arm, each parameter (log10 for log-scaled ones) and final val acc, coloured by the latter."""
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
            values = [codes[str(v)] if v is not None else np.nan for v in raw]
            dims.append(dict(label=esc(p), values=_f32(values), tickvals=list(codes.values()),
                             ticktext=[esc(c) for c in codes]))  # fmt: skip
        else:
            v = raw.astype(float)
            dims.append(dict(label=esc(f"log10 {p}" if kind == "log" else p),
                             values=_f32(np.log10(v) if kind == "log" else v)))  # fmt: skip
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
    search: pd.DataFrame, params: dict[str, str], colors: dict[str, str], limit: int = 2000
) -> go.Figure:
    """final val acc against each of the given (most important) parameters, points per arm."""
    done = search[search["final_val_acc"].notna()]
    if len(done) > limit:
        done = done.sample(limit, random_state=0)
    fig = param_effects(done, params, colors)
    fig.update_layout(title=dict(text="Slices of the most important parameters"))
    return fig


def cost_bars(trials: pd.DataFrame) -> go.Figure:
    """Trial-hours per arm, stacked by status."""
    hours = trials.pivot_table(index="arm", columns="status", values="trial_seconds",
                               aggfunc="sum", sort=False).fillna(0) / 3600  # fmt: skip
    fig = _figure("Trial-hours per arm and status", height=420, barmode="stack")
    order = [s for s in STATUS_COLORS if s in hours.columns] + [
        s for s in hours.columns if s not in STATUS_COLORS
    ]
    for status in order:
        fig.add_trace(
            go.Bar(x=[esc(a) for a in hours.index], y=_f32(hours[status]), name=esc(status),
                   marker_color=STATUS_COLORS.get(status, "#777"),
                   hovertemplate="%{x}: %{y:.2f} h<extra>" + esc(status) + "</extra>")
        )  # fmt: skip
    fig.update_yaxes(title="trial-hours")
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
    """One panel per factor: the mean result at each of its values with a 95% interval bar."""
    factors = list(dict.fromkeys(effects["factor"]))
    fig = make_subplots(rows=1, cols=len(factors), shared_yaxes=True,
                        subplot_titles=[esc(str(f)) for f in factors])  # fmt: skip
    for k, factor in enumerate(factors, start=1):
        g = effects[effects["factor"] == factor]
        err = np.where(g["lo"].notna(), (g["hi"] - g["mean"]) * 100, 0.0)
        fig.add_trace(
            go.Scatter(
                x=[esc(_label(v, factor)) for v in g["value"]], y=_pct(g["mean"]),
                mode="lines+markers",
                error_y=dict(type="data", array=_f32(err), visible=True), showlegend=False,
                line=dict(color=PALETTE[0]), customdata=np.c_[g["n"].to_numpy(np.float32)],
                hovertemplate="%{x}: %{y:.1f}% (n=%{customdata[0]})<extra></extra>",
            ),
            row=1, col=k,
        )  # fmt: skip
        fig.update_xaxes(type="category", row=1, col=k)
    fig.update_layout(template=TEMPLATE, height=380, title=dict(text="Main effects", x=0.01))
    fig.update_yaxes(title=y_label, row=1, col=1)
    return fig


def _label(value, factor: str) -> str:
    if factor == "data_fraction" and isinstance(value, float):
        return f"{100 * value:g}%"
    return str(value)
