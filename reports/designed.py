"""The report's effects section: paired differences (a heat map for two other factors) and main
effects. Built from `stats.arm_results` rows and the arms' factors; see `reports.effects`."""

from __future__ import annotations

import math

import pandas as pd

from reports import effects, figures, tables

__all__ = ["effects_section", "CONTRAST"]

CONTRAST = ("mode", "shared", "vit")  # factor, treatment, control: the paper's question
ROW_ORDER = {"preset": ["tiny", "mid", "vit_s", "vit_b"]}  # small to large, not alphabetical


def effects_section(
    results: pd.DataFrame, arms: dict[str, dict], y_label: str
) -> tuple[str, tuple, str] | None:
    """(caption, parts (HTML and figures, in order), markdown) of the effects section, or None
    when the study has no contrast and no factor with two values."""
    factor, treatment, control = CONTRAST
    diffs = effects.paired_differences(results, arms, factor, treatment, control)
    main = effects.main_effects(results, arms)
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
        parts.append(
            f"main effects over {main['factor'].nunique()} factor(s) "
            "(in an OFAT design, each against the base)"
        )
    caption = "; ".join(parts)
    return caption[0].upper() + caption[1:] + ".", tuple(body), md


_DIFF_COLUMNS = ("diff", "lo", "hi", "n", "treatment_mean", "control_mean", "note")


def _cell(d: pd.Series, others: list[str]) -> str:
    return ", ".join(f"{k}={d[k]}" for k in others) or "all"


def _diff_caption(diffs: pd.DataFrame, others: list[str]) -> str:
    factor, treatment, control = CONTRAST
    sure = diffs[diffs["lo"].notna()]
    better = sure[sure["lo"] > 0]
    worse = sure[sure["hi"] < 0]
    text = (
        f"{treatment} beats {control} with a 95% CI above zero in {len(better)} of {len(diffs)} "
        f"cell(s) and loses with one below zero in {len(worse)}"
    )
    if len(diffs):
        top = diffs.loc[diffs["diff"].idxmax()]
        text += f"; largest gain {top['diff'] * 100:+.1f} points at {_cell(top, others)}"
        bottom = diffs.loc[diffs["diff"].idxmin()]
        if bottom["diff"] < 0:
            text += f", largest loss {bottom['diff'] * 100:+.1f} at {_cell(bottom, others)}"
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
