"""The report's sections: an ordered list of builders, each a function of the loaded study.

A builder takes a `LoadedStudy` and returns a `Section`: an id, a title, a caption that states the
section's finding in numbers computed from the data, and its parts (HTML snippets and Plotly
figures, in order). `SECTIONS` is the page's order; `reports.page` only assembles. A new section
is one function appended to `SECTIONS`; each is testable alone::

    >>> from reports.load import load_study
    >>> section = cost(load_study(store, "my-study"))  # doctest: +SKIP
    >>> section.caption  # doctest: +SKIP
    '3.2 h of trial time in all; mode=joint,... cost most (1.1 h, 34%); ...'
"""

from __future__ import annotations

import datetime as dt
import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from reports import designed, figures, stats, tables, wording
from reports.load import LoadedStudy
from reports.main_views import MAIN_VIEWS, compact, duration, percent, source_label, summary_frame
from study.status import HAS_RESULT, TRAINED, Phase, TrialStatus

__all__ = [
    "Section",
    "SectionBuilder",
    "SECTIONS",
    "summary",
    "main_view",
    "learning_curves",
    "search_diagnostics",
    "results",
    "effects",
    "caveat",
    "cost",
    "provenance",
]

MAX_IMPORTANCE_TRIALS = 500  # PED-ANOVA per arm on at most this many completed trials
MIN_IMPORTANCE_TRIALS = 20  # and on at least this many: from fewer, its ranking is noise
esc = html.escape


@dataclass(frozen=True)
class Section:
    """One section of the page: HTML parts are trusted markup (escaped by their builder)."""

    id: str
    title: str
    caption: str
    parts: tuple[str | go.Figure, ...] = ()
    exports: dict[str, str] = field(default_factory=dict)  # suffix -> text written beside the page


SectionBuilder = Callable[[LoadedStudy], Section | None]  # None: nothing to show for this study


def _when(t) -> str:
    if t is None or (isinstance(t, float) and math.isnan(t)):
        return "–"
    return pd.Timestamp(t).strftime("%Y-%m-%d %H:%M")


def _kv_table(pairs: list[tuple[str, object]]) -> str:
    rows = "".join(f"<tr><th>{esc(str(k))}</th><td>{esc(str(v))}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def _best_arm(s: LoadedStudy) -> tuple[str, stats.Summary] | None:
    if not s.summaries:
        return None
    return max(s.summaries.items(), key=lambda kv: kv[1].mean)


# --- 1. summary -----------------------------------------------------------------------------------
def summary(s: LoadedStudy) -> Section:
    t, rec = s.trials, s.record
    counts = t["status"].value_counts()
    order = [st for st in figures.STATUS_COLORS if st in counts] + [
        st for st in counts.index if st not in figures.STATUS_COLORS
    ]
    count_text = ", ".join(f"{counts[st]} {st.lower()}" for st in order)
    seconds = float(t["trial_seconds"].sum())
    searched = t[(t["phase"] == Phase.SEARCH) & t["status"].isin(TRAINED)]
    saved = stats.asha_saved_share(searched["epochs_run"], s.max_epochs)
    best = _best_arm(s)
    caption = (
        f"{len(t)} trials ({count_text}) took {duration(seconds)} of trial time; ASHA saved "
        f"{saved:.0%} of "
        f"the search's epochs ({int(searched['epochs_run'].sum())} of "
        f"{len(searched) * s.max_epochs} epochs trained)"
    )
    if best:
        caption += (
            f"; best arm {best[0]} at {percent(best[1].mean)} "
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
    number_of = dict(zip(t["id"], t["number"], strict=True))
    for arm, g in s.results.groupby("arm", sort=False):
        src = tables.SOURCE_LABEL[g["source"].iloc[0]]
        params = compact(g["params"].iloc[0])
        numbers = ", ".join(str(number_of[i]) for i in g["trial_id"] if i in number_of)
        best_rows.append([arm, params, f"{g['value'].mean() * 100:.1f}", src, len(g), numbers])
    best_table = tables.html_table(
        ["arm", "configuration", "accuracy (%)", "source", "n", "trials"], best_rows
    )  # trials: the study's trial numbers, as the terminal printed them
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
    return Section("summary", "1. Summary", caption, (body,))


# --- 2. main view: the one the study plan chose for the space ----------------------------------
def main_view(s: LoadedStudy) -> Section:
    df = summary_frame(s)
    if df.empty:
        return Section("main", "2. Main view", "No arm has a finished trial yet.")
    name = s.record.main_view
    view = MAIN_VIEWS.get(name, MAIN_VIEWS["arms"])
    title, caption, parts = view(s, df)
    if name not in MAIN_VIEWS:
        parts += (f'<p class="note">Main view {esc(name)!s} is not known here; showing arms.</p>',)
    return Section("main", title, caption, parts)


# --- 3. learning curves ---------------------------------------------------------------------------
def learning_curves(s: LoadedStudy) -> Section:
    t, curves, drawn = s.trials, s.curves, len(s.drawn)
    search = t[t["phase"] == Phase.SEARCH]
    pruned = search[search["status"] == TrialStatus.PRUNED]
    caption = f"{drawn} of {len(t)} trials drawn"
    if drawn < len(t):
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
        return Section("curves", "3. Learning curves", caption + "; no per-epoch metrics stored.")
    parts: tuple[str | go.Figure, ...] = (
        figures.learning_curves(curves, t, s.colors, s.rungs, s.max_epochs),
    )
    if s.rungs:
        parts += (
            f'<p class="note">Dotted lines: ASHA rungs at epochs '
            f"{', '.join(map(str, s.rungs))} (the first epoch ≥ grace × reduction factor^k, "
            "where the scheduler decides). Dashed: val_acc_agent.</p>",
        )
    return Section("curves", "3. Learning curves", caption + ".", parts)


# --- 4. search diagnostics ------------------------------------------------------------------------
def search_diagnostics(s: LoadedStudy) -> Section:
    search = s.trials[(s.trials["phase"] == Phase.SEARCH) & s.trials["status"].isin(HAS_RESULT)]
    search = search[search["best_val_acc"].notna()]
    if search.empty:
        return Section("search", "4. Search diagnostics", "No completed search trial yet.")
    importances, skipped, used = stats.param_importances(
        s.optuna_trials, MAX_IMPORTANCE_TRIALS, min_trials=MIN_IMPORTANCE_TRIALS
    )
    prefix = f"{s.record.name}/"
    importances = {k.removeprefix(prefix): v for k, v in importances.items()}
    importances = {a: importances[a] for a in s.arms if a in importances}  # the page's arm order
    skipped = {k.removeprefix(prefix): v for k, v in skipped.items()}
    used = {k.removeprefix(prefix): v for k, v in used.items()}
    parts = []
    if importances:
        top = pd.Series([max(v, key=v.get) for v in importances.values()]).value_counts()
        parts.append(
            f"most important parameter: {top.index[0]} in {top.iloc[0]} of {len(importances)} arms "
            "(PED-ANOVA" + _importance_note([used[a] for a in importances]) + ")"
        )
    if skipped:
        parts.append(
            f"no parameter importance for {len(skipped)} of {len(s.arms)} arm(s) (PED-ANOVA "
            f"needs {MIN_IMPORTANCE_TRIALS} completed trials and two searched parameters)"
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
    body: list[str | go.Figure] = [figures.best_so_far(search, s.colors)]
    if importances:
        body.append(figures.importance_heatmap(importances, used))
    notes = [f"{a}: {why}" for a, why in skipped.items()]
    if not len(s.optuna_trials):
        notes.append("no Optuna studies found for this study's arms")
    if notes:
        body.append('<p class="note">Importance skipped for ' + esc("; ".join(notes)) + ".</p>")
    complete = search[search["status"] == TrialStatus.COMPLETE]
    if s.param_kinds and len(complete):
        body.append(figures.parallel_coordinates(complete, s.param_kinds))
        mean_imp = pd.DataFrame(importances.values()).mean().sort_values(ascending=False)
        ranked = [p for p in mean_imp.index if p in s.param_kinds] or list(s.param_kinds)
        top_params = {p: s.param_kinds[p] for p in ranked[:3]}
        title = "Slices of the most important parameters" if importances else "Slices"
        body.append(figures.slices(complete, top_params, s.colors, title=title))
    return Section("search", "4. Search diagnostics", caption, tuple(body))


def _importance_note(used: list[int]) -> str:
    low, high = min(used), max(used)
    text = f" from {low}" + (f"–{high}" if high != low else "") + " completed trials per arm"
    if high >= MAX_IMPORTANCE_TRIALS:
        text += f", a random {MAX_IMPORTANCE_TRIALS} of larger arms"
    return ", " + text.strip()


# --- 5. results against the baseline, also as Markdown and LaTeX beside the page ----------------
def results(s: LoadedStudy) -> Section:
    rows = tables.result_rows(s.summaries, s.sources, s.comparisons)
    if not s.comparisons:
        caption = "No arm has a baseline to compare with (none named by the space, or none run)"
    else:
        caption = wording.comparison_summary(s.comparisons)
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
    body = tables.html_table(tables.RESULT_HEADER, rows, "results") + note + _weights_links(s)
    title = f"bootstudy study {s.record.name}: results per arm"
    md = f"# {title}\n\n{caption}\n\n" + tables.markdown_table(tables.RESULT_HEADER, rows)
    tex = tables.latex_table(tables.RESULT_HEADER, rows, f"{title}. {caption}")
    exports = {".md": md, ".tex": tex}
    return Section("tables", "5. Results against the baseline", caption, (body,), exports)


def _weights_links(s: LoadedStudy) -> str:
    """Each final run's saved weights (trainers.weights: a state_dict per network and
    config.json), linked where they are on this machine; nothing when none were kept."""
    from trainers.home import weights_folder

    results_dir = s.record.config.get("results_dir")
    final = s.trials[s.trials["phase"] == Phase.FINAL] if results_dir else s.trials.iloc[:0]
    items = []
    for t in final.itertuples():
        folder = weights_folder(results_dir, s.record.name, int(t.number))
        if (folder / "config.json").exists():
            items.append(
                f"<li>trial {int(t.number)} ({html.escape(str(t.arm))}, seed {int(t.seed)}): "
                f'<a href="{html.escape(folder.as_uri())}/">{html.escape(str(folder))}</a></li>'
            )
    if not items:
        return ""
    return (
        '<p class="note">Final runs\' best-validation weights (load with '
        "<code>trainers.weights.load_weights</code>):</p><ul>" + "".join(items) + "</ul>"
    )


# --- 5a. effects of a designed study: paired differences, main effects -------------------------
def effects(s: LoadedStudy) -> Section | None:
    """None (no section) when the study has no shared/vit contrast and no factor with 2 values."""
    label = source_label(set(s.sources.values()))
    y = "test accuracy (%)" if label.startswith("test accuracy of") else "accuracy (%)"
    built = designed.effects_section(s.results, s.arms, y, s.design)
    if built is None:
        return None
    caption, parts, md = built
    title = "5a. Effects, paired by seed"
    return Section("effects", title, f"{caption[:-1]}; {label}.", parts, {".md": md} if md else {})


def caveat(record) -> str:
    """What the study's preset is known not to show (its budget's `caveat`), for the page header
    and the exported tables: e.g. a CPU budget too small for the paper's direction."""
    from search_spaces import SPACES

    space = SPACES.get(record.space)
    budget = space.budgets.get(record.preset) if space is not None else None
    return budget.caveat if budget is not None else ""


# --- 6. cost --------------------------------------------------------------------------------------
def cost(s: LoadedStudy) -> Section:
    t = s.trials
    total = float(t["trial_seconds"].sum())
    if total <= 0:
        return Section("cost", "6. Cost", "No trial-seconds recorded.")
    per_arm = t.groupby("arm", sort=False)["trial_seconds"].sum()
    per_status = t.groupby("status")["trial_seconds"].sum() / total
    per_status = per_status.reindex(
        [st for st in figures.STATUS_COLORS if st in per_status.index]
        + [st for st in per_status.index if st not in figures.STATUS_COLORS]
    )
    caption = (
        f"{duration(total)} of trial time in all; {per_arm.idxmax()} cost most "
        f"({duration(per_arm.max())}, {per_arm.max() / total:.0%}); "
        + ", ".join(f"{st.lower()} trials used {share:.0%}" for st, share in per_status.items())
        + "."
        + _ssl_cost(t)
    )
    return Section("cost", "6. Cost", caption, (figures.cost_bars(t),))


def _ssl_cost(t: pd.DataFrame) -> str:
    """The self-supervised phases' share of each arm's trial time (ssl_init=dino), if any."""
    if "ssl_seconds" not in t or not (t["ssl_seconds"] > 0).any():
        return ""
    per_arm = t.groupby("arm", sort=False)[["ssl_seconds", "trial_seconds"]].sum()
    per_arm = per_arm[per_arm["ssl_seconds"] > 0]
    shares = ", ".join(
        f"{arm} {duration(row.ssl_seconds)} "
        f"({row.ssl_seconds / max(row.trial_seconds, 1e-9):.0%} of its trial time)"
        for arm, row in per_arm.iterrows()
    )
    return f" Self-supervised pre-training phases (included above): {shares}."


# --- 7. provenance --------------------------------------------------------------------------------
def provenance(s: LoadedStudy) -> Section:
    rec = s.record
    hw = human_units(rec.hardware if isinstance(rec.hardware, dict) else {"hardware": rec.hardware})
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
    return Section("provenance", "7. Provenance", caption, (_kv_table(pairs) + packages,))


def human_units(values: dict) -> dict:
    """Hardware as a reader reads it: `*_bytes` fields in GiB under their name without the
    suffix (ram 23.5 GiB, not ram_bytes 25276182528), GPUs one short phrase each."""
    out: dict = {}
    for key, value in values.items():
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if key.endswith("_bytes") and number:
            out[key.removesuffix("_bytes")] = gib(value)
        elif key == "gpus" and isinstance(value, list):
            out[key] = "; ".join(_gpu(g) for g in value) or "none"
        else:
            out[key] = value
    return out


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GiB"


def _gpu(gpu) -> str:
    if not isinstance(gpu, dict):
        return str(gpu)
    extra = [gib(gpu["memory_bytes"])] if isinstance(gpu.get("memory_bytes"), int | float) else []
    extra += [f"compute capability {gpu['capability']}"] if gpu.get("capability") else []
    return f"{gpu.get('name', 'GPU')} ({', '.join(extra)})" if extra else str(gpu.get("name"))


# The page, in order.
SECTIONS: tuple[SectionBuilder, ...] = (
    summary,
    main_view,
    learning_curves,
    search_diagnostics,
    results,
    effects,
    cost,
    provenance,
)
