"""Assembling the report: seven sections, each opening with a caption computed from the data.

`build_page` returns the HTML (plotly.js embedded once, in the head) and the results table as
Markdown and LaTeX. Every study-derived string passes through `html.escape` (tables escape their
cells, figures their labels).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.offline

from reports import figures, stats, tables
from reports.load import StudyRecord, load_curves, load_optuna_trials
from study.engine import mask_password
from study.status import HAS_RESULT, TRAINED, Phase, TrialStatus
from study.store import Store

__all__ = ["Report", "build_page"]

MAX_CURVES = 300  # curves drawn; beyond a few hundred lines a plot shows nothing more
MAX_IMPORTANCE_TRIALS = 500  # PED-ANOVA per arm on at most this many completed trials
esc = html.escape
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;
background:#fafafa}
header{background:#1f2d3d;color:#fff;padding:18px 32px}
header h1{margin:0 0 6px;font-size:1.5em;word-break:break-all}
header nav a{color:#cfe3ff;margin-right:14px;text-decoration:none;font-size:.92em}
main{max-width:1280px;margin:0 auto;padding:8px 32px 48px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:14px 20px;margin:18px 0}
h2{margin:4px 0 6px;font-size:1.2em}
p.caption{font-size:1.05em;font-weight:600;color:#1f4f82;margin:4px 0 12px}
p.note{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:8px 0 14px;font-size:.88em}
th,td{border-bottom:1px solid #e5e5e5;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f2f4f7}
td{font-variant-numeric:tabular-nums}
table.kv th{width:180px}
.figure{margin:6px 0 14px}
code{background:#f2f4f7;padding:1px 4px;border-radius:3px;word-break:break-all}
"""


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    caption: str
    body: str


@dataclass
class Report:
    """A built report: the page and the results table in two more formats."""

    html: str
    markdown: str
    latex: str
    captions: dict[str, str] = field(default_factory=dict)


def _pct(x: float, digits: int = 1) -> str:
    return f"{x * 100:.{digits}f}%"


def _fraction_label(f: float) -> str:
    return f"{100 * float(f):g}%"


def _sort_key(factors: dict) -> tuple:
    key = []
    for k, v in factors.items():
        if k == "mode" and v in figures.MODE_ORDER:
            key.append((0, figures.MODE_ORDER.index(v), ""))
        elif isinstance(v, int | float):
            key.append((1, float(v), ""))
        else:
            key.append((2, 0.0, str(v)))
    return tuple(key)


class _Figures:
    """Numbers the figures of one page; plotly.js is not included, the page embeds it once."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fig) -> str:
        self.count += 1
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"fig-{self.count}",
            config={"displaylogo": False, "responsive": True},
        )
        return f'<div class="figure">{div}</div>'


@dataclass
class _Study:
    """Everything the sections share, computed once."""

    record: StudyRecord
    trials: pd.DataFrame
    storage_url: str
    arms: dict[str, dict]
    colors: dict[str, str]
    results: pd.DataFrame
    summaries: dict[str, stats.Summary]
    sources: dict[str, str]
    comparisons: list[stats.Comparison]
    max_epochs: int
    rungs: list[int]
    param_kinds: dict[str, str]
    optuna_trials: pd.DataFrame


def _prepare(store: Store, record: StudyRecord, trials: pd.DataFrame, url: str) -> _Study:
    cfg = record.config
    arms = {}
    for arm, factors in zip(trials["arm"], trials["factors"], strict=True):
        arms.setdefault(arm, factors)
    arms = dict(sorted(arms.items(), key=lambda kv: _sort_key(kv[1])))
    trials = trials.assign(arm=pd.Categorical(trials["arm"], categories=list(arms), ordered=True))
    trials = trials.sort_values(["arm", "id"]).assign(arm=lambda d: d["arm"].astype(str))
    results = stats.arm_results(trials)
    summaries = {
        arm: stats.summarize(results.loc[results["arm"] == arm, "value"])
        for arm in arms
        if (results["arm"] == arm).any()
    }
    sources = results.groupby("arm")["source"].first().to_dict()
    max_epochs = int(
        cfg.get("epochs") or np.nanmax(trials["epochs_run"].to_numpy(float), initial=1)
    )
    names = [n for n in trials["optuna_study_name"].dropna().unique()]
    optuna_trials = load_optuna_trials(store, names)
    return _Study(
        record=record,
        trials=trials,
        storage_url=mask_password(url),
        arms=arms,
        colors=figures.arm_colors(list(arms)),
        results=results,
        summaries=summaries,
        sources=sources,
        comparisons=stats.compare_arms(results, record.baselines),
        max_epochs=max_epochs,
        rungs=list(record.rungs),
        param_kinds=_param_kinds(trials, optuna_trials),
        optuna_trials=optuna_trials,
    )


def _param_kinds(trials: pd.DataFrame, optuna_trials: pd.DataFrame) -> dict[str, str]:
    """ "log", "linear" or "categorical" per searched parameter: Optuna's distributions when they
    are stored, else guessed from the values."""
    from optuna.distributions import CategoricalDistribution

    dists = optuna_trials.attrs.get("distributions", {})
    kinds: dict[str, str] = {}
    search = trials[trials["phase"] == Phase.SEARCH]
    for p in dict.fromkeys(k for d in search["params"] for k in d):
        if p in dists:
            d = dists[p]
            kinds[p] = "categorical" if isinstance(d, CategoricalDistribution) else (
                "log" if getattr(d, "log", False) else "linear")  # fmt: skip
            continue
        values = [d.get(p) for d in search["params"] if d.get(p) is not None]
        if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            lo, hi = min(values), max(values)
            kinds[p] = "log" if lo > 0 and hi / lo > 20 else "linear"
        else:
            kinds[p] = "categorical"
    return kinds


def _source_label(sources: set[str]) -> str:
    if sources == {"test"}:
        return "test accuracy of the final runs"
    if sources == {"val"}:
        return "best val accuracy, optimistic (selected on validation)"
    return (
        "test accuracy where final runs exist, else optimistic val accuracy "
        "(selected on validation)"
    )


def _when(t) -> str:
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return "–"
    return pd.Timestamp(t).strftime("%Y-%m-%d %H:%M")


def _kv_table(pairs: list[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _best_arm(s: _Study) -> tuple[str, stats.Summary] | None:
    if not s.summaries:
        return None
    return max(s.summaries.items(), key=lambda kv: kv[1].mean)


# --- 1. summary -----------------------------------------------------------------------------------
def _summary(s: _Study) -> Section:
    t, rec = s.trials, s.record
    counts = t["status"].value_counts()
    order = [st for st in figures.STATUS_COLORS if st in counts] + [
        st for st in counts.index if st not in figures.STATUS_COLORS
    ]
    count_text = ", ".join(f"{counts[st]} {st.lower()}" for st in order)
    hours = float(t["trial_seconds"].sum()) / 3600
    searched = t[(t["phase"] == Phase.SEARCH) & t["status"].isin(TRAINED)]
    saved = stats.asha_saved_share(searched["epochs_run"], s.max_epochs)
    best = _best_arm(s)
    caption = (
        f"{len(t)} trials ({count_text}) took {hours:.1f} trial-hours; ASHA saved {saved:.0%} of "
        f"the search's epochs ({int(searched['epochs_run'].sum())} of "
        f"{len(searched) * s.max_epochs} epochs trained)"
    )
    if best:
        caption += (
            f"; best arm {best[0]} at {_pct(best[1].mean)} "
            f"({tables.SOURCE_LABEL[s.sources[best[0]]]}, n={best[1].n})"
        )
    info = _kv_table(
        [
            ("study", rec.name), ("space", rec.space), ("dataset", rec.dataset),
            ("preset", rec.preset), ("command", rec.command), ("status", rec.status),
            ("created", _when(rec.created_at)), ("finished", _when(rec.finished_at)),
            ("max epochs / grace / reduction factor",
             f"{s.max_epochs} / {rec.config.get('grace_epochs')} / "
             f"{rec.config.get('reduction_factor')}"),
            ("objective", rec.config.get("objective", "val_acc")),
        ]
    )  # fmt: skip
    by_status = t.pivot_table(index="phase", columns="status", values="id", aggfunc="count",
                              fill_value=0)  # fmt: skip
    status_table = tables.html_table(
        ["phase", *by_status.columns], [[p, *row] for p, row in zip(by_status.index,
                                        by_status.to_numpy().tolist(), strict=True)]
    )  # fmt: skip
    best_rows = []
    for arm, g in s.results.groupby("arm", sort=False):
        src = tables.SOURCE_LABEL[g["source"].iloc[0]]
        params = json.dumps(g["params"].iloc[0], sort_keys=True)
        best_rows.append([arm, params, f"{g['value'].mean() * 100:.1f}", src, len(g)])
    best_table = tables.html_table(["arm", "configuration", "accuracy (%)", "source", "n"],
                                   best_rows)  # fmt: skip
    failed = t[t["status"] == TrialStatus.FAILED]
    errors = ""
    if len(failed):
        top = failed["error"].fillna("(no message)").str.slice(0, 160).value_counts().head(5)
        errors = "<h3>Failures</h3>" + tables.html_table(
            ["error", "trials"], [[e, n] for e, n in top.items()]
        )
    body = (
        info + "<h3>Trials by phase and status</h3>" + status_table
        + "<h3>Best configuration per arm</h3>" + best_table + errors
    )  # fmt: skip
    return Section("summary", "1. Summary", caption, body)


# --- 2. main view ---------------------------------------------------------------------------------
def _summary_frame(s: _Study) -> pd.DataFrame:
    rows = []
    for arm, sm in s.summaries.items():
        lo, hi = sm.ci if sm.ci else (math.nan, math.nan)
        rows.append({"arm": arm, **s.arms[arm], "mean": sm.mean, "lo": lo, "hi": hi, "n": sm.n})
    return pd.DataFrame(rows)


def _main_view(s: _Study, fig) -> Section:
    df = _summary_frame(s)
    label = _source_label(set(s.sources.values()))
    if df.empty:
        return Section("main", "2. Main view", "No arm has a finished trial yet.", "")
    # The factor is TrainConfig's `data_fraction`; plots and captions call it `fraction`.
    df = df.rename(columns={"data_fraction": "fraction"})
    if s.record.main_view == "fraction_curve" and {"mode", "fraction"} <= set(df.columns):
        df["fraction"] = df["fraction"].astype(float)
        y = "test accuracy (%)" if label.startswith("test accuracy of") else "accuracy (%)"
        body = fig(figures.accuracy_vs_fraction(df, y))
        return Section("main", "2. Accuracy vs data fraction", _fraction_caption(df, label), body)
    best = df.sort_values("mean", ascending=False)
    top = best.iloc[0]
    caption = f"{top['arm']} is best at {_pct(top['mean'])} (n={int(top['n'])})"
    if len(best) > 1:
        second = best.iloc[1]
        caption += f", {(top['mean'] - second['mean']) * 100:.1f} points ahead of {second['arm']}"
    caption += f"; {label}."
    search = s.trials[
        (s.trials["phase"] == Phase.SEARCH) & (s.trials["status"] == TrialStatus.COMPLETE)
    ]
    body = ""
    if s.param_kinds and len(search):
        body += fig(figures.param_effects(search, s.param_kinds, s.colors))
    body += fig(figures.best_per_arm(df, s.colors, "accuracy (%)"))
    return Section("main", "2. Parameters and arms", caption, body)


def _fraction_caption(df: pd.DataFrame, label: str) -> str:
    """ "shared beats vit by 6.1 points at 10% data": the largest gap of any mode over vit."""
    gaps = []
    for fraction, g in df.groupby("fraction"):
        vit = g[g["mode"] == "vit"]
        others = g[g["mode"] != "vit"]
        if len(vit) and len(others):
            top = others.loc[others["mean"].idxmax()]
            gaps.append((float(top["mean"] - vit["mean"].iloc[0]), fraction, top["mode"]))
    if not gaps:
        return f"No fraction has both vit and another mode yet; {label}."
    gap, fraction, mode = max(gaps)
    where = f"at {_fraction_label(fraction)} data"
    if gap >= 0:
        text = f"{mode} beats vit by {gap * 100:.1f} points {where}"
    else:
        text = (
            f"vit beats every other mode {where}; the closest, {mode}, is "
            f"{-gap * 100:.1f} points behind"
        )
    if len(gaps) > 1:
        text += f" (the largest gap of {len(gaps)} fractions)"
    return f"{text}; {label}."


# --- 3. learning curves ---------------------------------------------------------------------------
def _learning_curves(s: _Study, store: Store, fig) -> Section:
    t = s.trials
    ids = figures.select_curves(t, MAX_CURVES)
    curves = load_curves(store, s.record.name, ids)
    search = t[t["phase"] == Phase.SEARCH]
    pruned = search[search["status"] == TrialStatus.PRUNED]
    caption = f"{len(ids)} of {len(t)} trials drawn"
    if len(ids) < len(t):
        caption += " (all final runs, each arm's best search trials, a seeded random sample)"
    if len(pruned):
        at = pruned["epochs_run"].value_counts().sort_index()
        stops = ", ".join(f"{n} at epoch {int(e)}" for e, n in at.head(6).items())
        caption += f"; {len(pruned)} pruned trials stopped: {stops}"
    if len(search):
        caption += (
            f"; the median search trial ran {search['epochs_run'].median():g} of "
            f"{s.max_epochs} epochs"
        )
    if curves.empty:
        return Section(
            "curves", "3. Learning curves", caption + "; no per-epoch metrics stored.", ""
        )
    body = fig(figures.learning_curves(curves, t, s.colors, s.rungs, s.max_epochs))
    if s.rungs:
        body += (
            f'<p class="note">Dotted lines: ASHA rungs at epochs '
            f"{', '.join(map(str, s.rungs))} (grace × reduction factor^k). "
            "Dashed: val_acc_agent.</p>"
        )
    return Section("curves", "3. Learning curves", caption + ".", body)


# --- 4. search diagnostics ------------------------------------------------------------------------
def _diagnostics(s: _Study, fig) -> Section:
    search = s.trials[(s.trials["phase"] == Phase.SEARCH) & s.trials["status"].isin(HAS_RESULT)]
    search = search[search["best_val_acc"].notna()]
    if search.empty:
        return Section("search", "4. Search diagnostics", "No completed search trial yet.", "")
    importances, skipped, used = stats.param_importances(s.optuna_trials, MAX_IMPORTANCE_TRIALS)
    prefix = f"{s.record.name}/"
    importances = {k.removeprefix(prefix): v for k, v in importances.items()}
    importances = {a: importances[a] for a in s.arms if a in importances}  # the page's arm order
    skipped = {k.removeprefix(prefix): v for k, v in skipped.items()}
    parts = []
    if importances:
        top = pd.Series([max(v, key=v.get) for v in importances.values()]).value_counts()
        parts.append(
            f"most important parameter: {top.index[0]} in {top.iloc[0]} of {len(importances)} arms "
            "(PED-ANOVA" + _importance_note(list(used.values())) + ")"
        )
    firsts = []
    for _, g in search.groupby("arm", sort=False):
        values = g.sort_values("number")["best_val_acc"].to_numpy()
        firsts.append((int(np.argmax(values)) + 1, len(values)))
    parts.append(
        f"each arm found its best after a median of {np.median([f for f, _ in firsts]):g} "
        f"completed trials (median arm size {np.median([n for _, n in firsts]):g})"
    )
    caption = "; ".join(parts)
    caption = caption[0].upper() + caption[1:] + "."
    body = fig(figures.best_so_far(search, s.colors))
    if importances:
        body += fig(figures.importance_heatmap(importances))
    notes = [f"{a}: {why}" for a, why in skipped.items()]
    if not len(s.optuna_trials):
        notes.append("no Optuna studies found for this study's arms")
    if notes:
        body += '<p class="note">Importance skipped for ' + esc("; ".join(notes)) + ".</p>"
    complete = search[search["status"] == TrialStatus.COMPLETE]
    if s.param_kinds and len(complete):
        body += fig(figures.parallel_coordinates(complete, s.param_kinds))
        mean_imp = pd.DataFrame(importances.values()).mean().sort_values(ascending=False)
        ranked = [p for p in mean_imp.index if p in s.param_kinds] or list(s.param_kinds)
        top_params = {p: s.param_kinds[p] for p in ranked[:3]}
        body += fig(figures.slices(complete, top_params, s.colors))
    return Section("search", "4. Search diagnostics", caption, body)


def _importance_note(used: list[int]) -> str:
    notes = []
    if max(used) >= MAX_IMPORTANCE_TRIALS:
        notes.append(f"on a random {MAX_IMPORTANCE_TRIALS} completed trials of larger arms")
    if min(used) < 20:
        notes.append("rough where an arm has fewer than 20 completed trials")
    return "".join(", " + n for n in notes)


# --- 5. tables ------------------------------------------------------------------------------------
def _tables(s: _Study) -> tuple[Section, str, str]:
    rows = tables.result_rows(s.summaries, s.sources, s.comparisons)
    cmp = [c for c in s.comparisons if c.p_holm is not None]
    if not s.comparisons:
        caption = "No arm has a baseline to compare with (none named by the space, or none run)"
    elif not cmp:
        caption = (
            f"{len(s.comparisons)} comparisons with the baseline, none testable "
            "(every test needs n ≥ 2 on both sides)"
        )
    else:
        sig = sum(c.p_holm < 0.05 for c in cmp)
        big = max(s.comparisons, key=lambda c: c.diff)
        caption = (
            f"{sig} of {len(cmp)} tested comparisons differ from their baseline at p < 0.05 after "
            f"Holm; largest gain: {big.arm} over {big.baseline}, {big.diff * 100:+.1f} points"
            + (f" (p = {tables.format_p(big.p)})" if big.p is not None else "")
        )
    single = [a for a, sm in s.summaries.items() if sm.n < 2]
    if single:
        caption += f"; {len(single)} arm(s) with n=1 have no interval"
    caption += "."
    note = (
        '<p class="note">Δ: difference of means in percentage points against the baseline arm '
        "(the space's baseline factor values, the other factors the same). p: paired "
        "t-test when both arms ran the same seeds, Welch's t-test otherwise; Holm's correction "
        "across the arms that share a baseline.</p>"
    )
    body = tables.html_table(tables.RESULT_HEADER, rows, "results") + note
    title = f"bootstudy study {s.record.name}: results per arm"
    md = f"# {title}\n\n{caption}\n\n" + tables.markdown_table(tables.RESULT_HEADER, rows)
    tex = tables.latex_table(tables.RESULT_HEADER, rows, f"{title}. {caption}")
    return Section("tables", "5. Results against the baseline", caption, body), md, tex


# --- 6. cost --------------------------------------------------------------------------------------
def _cost(s: _Study, fig) -> Section:
    t = s.trials
    total = float(t["trial_seconds"].sum())
    if total <= 0:
        return Section("cost", "6. Cost", "No trial-seconds recorded.", "")
    per_arm = t.groupby("arm", sort=False)["trial_seconds"].sum()
    per_status = t.groupby("status")["trial_seconds"].sum() / total
    per_status = per_status.reindex(
        [st for st in figures.STATUS_COLORS if st in per_status.index]
        + [st for st in per_status.index if st not in figures.STATUS_COLORS]
    )
    caption = (
        f"{total / 3600:.1f} trial-hours in all; {per_arm.idxmax()} cost most "
        f"({per_arm.max() / 3600:.1f} h, {per_arm.max() / total:.0%}); "
        + ", ".join(f"{st.lower()} trials used {share:.0%}" for st, share in per_status.items())
        + "."
    )
    return Section("cost", "6. Cost", caption, fig(figures.cost_bars(t)))


# --- 7. provenance --------------------------------------------------------------------------------
def _provenance(s: _Study) -> Section:
    rec = s.record
    hw = rec.hardware if isinstance(rec.hardware, dict) else {"hardware": rec.hardware}
    hw_text = ", ".join(f"{k}={v}" for k, v in hw.items()) or "not recorded"
    caption = (
        f"Code {rec.code_version}; {len(rec.package_versions)} package versions recorded; "
        f"hardware: {hw_text}."
    )
    pairs = [
        ("code version", rec.code_version),
        ("command", rec.command),
        ("storage", s.storage_url),
        ("report built", dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        *((f"hardware: {k}", v) for k, v in hw.items()),
    ]
    packages = tables.html_table(
        ["package", "version"], sorted([k, v] for k, v in rec.package_versions.items())
    )
    return Section("provenance", "7. Provenance", caption, _kv_table(pairs) + packages)


def build_page(store: Store, record: StudyRecord, trials: pd.DataFrame, storage_url: str) -> Report:
    """The whole report for one study (see `reports.build_report`)."""
    s = _prepare(store, record, trials, storage_url)
    fig = _Figures()
    table_section, md, tex = _tables(s)
    sections = [
        _summary(s),
        _main_view(s, fig),
        _learning_curves(s, store, fig),
        _diagnostics(s, fig),
        table_section,
        _cost(s, fig),
        _provenance(s),
    ]
    nav = "".join(f'<a href="#{x.id}">{esc(x.title)}</a>' for x in sections)
    content = "".join(
        f'<section id="{x.id}"><h2>{esc(x.title)}</h2><p class="caption">{esc(x.caption)}</p>'
        f"{x.body}</section>"
        for x in sections
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>bootstudy report: {esc(record.name)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head><body>'
        f"<header><h1>bootstudy report: {esc(record.name)}</h1><nav>{nav}</nav></header>"
        f"<main>{content}</main></body></html>\n"
    )
    return Report(page, md, tex, {x.id: x.caption for x in sections})
