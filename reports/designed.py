"""The report's effects section: paired differences (a heat map for two other factors) and main
effects. Built from `stats.arm_results` rows and the arms' factors; see `reports.effects`."""

from __future__ import annotations

import math

import pandas as pd

from reports import effects, figures, tables, wording

__all__ = ["effects_section", "study_design", "CONTRAST"]

CONTRAST = ("mode", "shared", "vit")  # factor, treatment, control: the paper's question
ROW_ORDER = {"preset": ["tiny", "mid", "vit_s", "vit_b"]}  # small to large, not alphabetical


def study_design(config: dict, searched: bool, space_has_cells: bool) -> str:
    """The design the study ran, a key of `wording.DESIGNS`: "searched" when it had a search
    phase, else the plan's `design` (stored in the study's config), else "cells" for a space that
    lists its own cells and "factorial" for one that takes the product of its factors."""
    if searched:
        return "searched"
    design = config.get("design")
    if design in wording.DESIGNS:
        return design
    return "cells" if space_has_cells else "factorial"


def effects_section(
    results: pd.DataFrame, arms: dict[str, dict], y_label: str, design: str = "factorial"
) -> tuple[str, tuple, str] | None:
    """(caption, parts (HTML and figures, in order), markdown) of the effects section, or None
    when the study has no contrast and no factor with two values. `design`: `study_design`."""
    factor, treatment, control = CONTRAST
    diffs = effects.paired_differences(results, arms, factor, treatment, control)
    main = effects.main_effects(results, arms, ofat=design == "ofat")
    if diffs.empty and main.empty:
        return None
    parts: list[str] = []
    body: list = []
    md = ""
    if not diffs.empty:
        others = [c for c in diffs.columns if c not in _DIFF_COLUMNS]
        varying = [c for c in others if diffs[c].nunique() > 1]
        parts.append(_diff_caption(diffs, others))
        if len(varying) == 2:
            row, column = varying
            body.append(
                figures.difference_heatmap(
                    diffs, row, column, f"{treatment} − {control}, paired by seed (points, 95% CI)",
                    ROW_ORDER.get(row),
                )
            )  # fmt: skip
        header, rows = _diff_table(diffs, others)
        body.append(tables.html_table(header, rows, "differences"))
        md += f"## {treatment} − {control}, paired by seed\n\n" + tables.markdown_table(
            header, rows
        )
    if not main.empty:
        body.append(figures.main_effects(main, y_label))
        header, rows = _main_table(main)
        body.append(tables.html_table(header, rows, "main-effects"))
        parts.append(_main_caption(main, design))
    caption = "; ".join(parts)
    return caption[0].upper() + caption[1:] + ".", tuple(body), md


def _main_caption(main: pd.DataFrame, design: str) -> str:
    factors = list(dict.fromkeys(main["factor"]))
    spreads = []
    for name in factors:
        g = main[main["factor"] == name]
        levels = [(_level(v, name), m, int(n)) for v, m, n in zip(g["value"], g["mean"], g["n"],
                  strict=True)]  # fmt: skip
        spreads.append((float(g["mean"].max() - g["mean"].min()), name, levels))
    spreads.sort(key=lambda x: -x[0])
    text = f"main effects of {len(factors)} factor(s) ({wording.design_phrase(design)})"
    shown = [wording.main_effect(name, levels) for _, name, levels in spreads[:3]]
    text += ": " + "; ".join(shown)
    if len(spreads) > 3:
        text += f"; {len(spreads) - 3} more in the table"
    return text


def _level(value, factor: str) -> str:
    return f"{100 * value:g}% data" if factor == "data_fraction" else str(value)


def _main_table(main: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    header = ["factor", "level", "mean (%)", "95% CI (%)", "n"]
    rows = []
    for _, m in main.iterrows():
        ci = (
            f"[{m['lo'] * 100:.1f}, {m['hi'] * 100:.1f}]"
            if not math.isnan(m["lo"])
            else f"n={int(m['n'])}, no interval"
        )
        rows.append([str(m["factor"]), f"{m['factor']}={m['value']}", f"{m['mean'] * 100:.1f}",
                     ci, str(int(m["n"]))])  # fmt: skip
    return header, rows


_DIFF_COLUMNS = ("diff", "lo", "hi", "n", "treatment_mean", "control_mean", "note")


def _cell(d: pd.Series, others: list[str]) -> str:
    return ", ".join(f"{k}={d[k]}" for k in others) or "all"


def _diff_caption(diffs: pd.DataFrame, others: list[str]) -> str:
    _, treatment, control = CONTRAST
    rows = list(diffs.iterrows())
    if len(rows) == 1:  # one cell: the whole claim, with its interval
        d = rows[0][1]
        text = wording.contrast(treatment, control, d["diff"], d["lo"], d["hi"], int(d["n"]))
        where = _cell(d, others)
        if where != "all":
            text += f" at {where}"
    else:
        verdicts = [wording.verdict(d["lo"], d["hi"]) for _, d in rows]
        text = wording.contrast_counts(treatment, control, verdicts, "cells")
        extremes = wording.extremes([(d["diff"], _cell(d, others)) for _, d in rows])
        if extremes:
            text += "; " + extremes
    few = int((diffs["n"] < effects.FEW_SEEDS).sum())
    if few:
        text += f"; {few} cell(s) with fewer than {effects.FEW_SEEDS} seeds"
    return text


def _diff_table(diffs: pd.DataFrame, others: list[str]) -> tuple[list[str], list[list[str]]]:
    _, treatment, control = CONTRAST
    header = [*others, f"{treatment} (%)", f"{control} (%)", "Δ (points)", "95% CI", "n", "note"]
    rows = []
    for _, d in diffs.iterrows():
        ci = (
            f"[{d['lo'] * 100:+.2f}, {d['hi'] * 100:+.2f}]"
            if not math.isnan(d["lo"])
            else "no interval"
        )
        rows.append(
            [
                *(str(d[k]) for k in others), f"{d['treatment_mean'] * 100:.2f}",
                f"{d['control_mean'] * 100:.2f}", f"{d['diff'] * 100:+.2f}", ci, str(int(d["n"])),
                d["note"] or "–",
            ]
        )  # fmt: skip
    return header, rows
