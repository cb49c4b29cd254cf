"""The report's sentences: one function per kind of claim, each built from the numbers it states.

A caption never picks its verb by hand: `verdict` reads the sign of a 95% interval, and every
sentence that compares two things takes its words from that verdict ("beats" only when the whole
interval is above zero, "trails" only when it is below, "no claim either way" when it spans
zero, "no interval" with one replicate). "gain" is said of positive differences only and "loss"
of negative ones. Numbers are in percentage points with one decimal, as in the tables beside the
captions (the paired-differences table shows two), so a sentence and its table row show the
same digits; a difference that shows as 0.0 is neither a gain nor a loss.

>>> contrast("shared", "vit", -0.047, -0.081, -0.013, 3)
'shared trails vit by 4.7 points, 95% CI [-8.1, -1.3], n=3'
>>> contrast("shared", "vit", 0.012, -0.02, 0.044, 3)
'shared vs vit: +1.2 points, 95% CI [-2.0, +4.4] spans zero: no claim either way (n=3)'
>>> contrast("shared", "vit", 0.012, None, None, 1)
'shared vs vit: +1.2 points from n=1, no interval: no claim either way'
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence

__all__ = [
    "Verdict",
    "DESIGNS",
    "verdict",
    "shown",
    "points",
    "signed_points",
    "ci_text",
    "contrast",
    "contrast_counts",
    "extremes",
    "comparison_summary",
    "design_phrase",
    "main_effect",
]


class Verdict(enum.Enum):
    """What a 95% interval of a difference lets a sentence claim."""

    ABOVE = "above"  # the whole interval above zero: a gain
    BELOW = "below"  # the whole interval below zero: a loss
    SPANS = "spans"  # zero inside the interval: no claim either way
    NONE = "none"  # no interval (n < 2): no claim either way


# What each design means for a level's mean in the main effects, in words a reader can check.
DESIGNS = {
    "searched": "searched study: each arm's best configuration from its own search, each "
    "level's mean averaged over the other factors",
    "ofat": "OFAT design: each factor varied alone, each level against the base cell",
    "factorial": "full factorial design: each level's mean averages over the other factors",
    "cells": "the space's own cells (not a full factorial): each level's mean averages over "
    "the cells that have it",
}


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def verdict(lo: float | None, hi: float | None) -> Verdict:
    """ABOVE/BELOW when the interval excludes zero, SPANS when it holds zero, NONE without one."""
    if _missing(lo) or _missing(hi):
        return Verdict.NONE
    if lo > 0:
        return Verdict.ABOVE
    if hi < 0:
        return Verdict.BELOW
    return Verdict.SPANS


def shown(x: float) -> float:
    """x as a sentence shows it, in points to one decimal: a gain or loss that shows as 0.0 is
    neither (a float's last bit is not a gain)."""
    return round(x * 100, 1) + 0.0  # + 0.0: -0.0 becomes 0.0


def points(x: float) -> str:
    """|x| in percentage points, one decimal: '4.7 points'."""
    return f"{abs(x) * 100:.1f} points"


def signed_points(x: float) -> str:
    """x in percentage points with its sign: '+1.2 points', '-4.7 points'."""
    return f"{x * 100:+.1f} points"


def ci_text(lo: float, hi: float) -> str:
    """'95% CI [-8.1, -1.3]' in percentage points, signed as the tables show it."""
    return f"95% CI [{lo * 100:+.1f}, {hi * 100:+.1f}]"


def contrast(
    treatment: str, control: str, diff: float, lo: float | None, hi: float | None, n: int
) -> str:
    """treatment - control in one sentence whose verb follows the interval, not the mean."""
    v = verdict(lo, hi)
    if v is Verdict.ABOVE:
        return f"{treatment} beats {control} by {points(diff)}, {ci_text(lo, hi)}, n={n}"
    if v is Verdict.BELOW:
        return f"{treatment} trails {control} by {points(diff)}, {ci_text(lo, hi)}, n={n}"
    if v is Verdict.SPANS:
        return (
            f"{treatment} vs {control}: {signed_points(diff)}, {ci_text(lo, hi)} spans zero: "
            f"no claim either way (n={n})"
        )
    return (
        f"{treatment} vs {control}: {signed_points(diff)} from n={n}, no interval: "
        "no claim either way"
    )


def contrast_counts(treatment: str, control: str, verdicts: Sequence[Verdict], unit: str) -> str:
    """How many cells each verdict got: 'shared beats vit (95% CI above zero) in 1 of 4 cells,
    trails it (CI below zero) in 1, no claim either way in 2 (1 without an interval)'."""
    n = len(verdicts)
    above = sum(v is Verdict.ABOVE for v in verdicts)
    below = sum(v is Verdict.BELOW for v in verdicts)
    none = sum(v is Verdict.NONE for v in verdicts)
    open_ = n - above - below
    text = (
        f"{treatment} beats {control} (95% CI above zero) in {above} of {n} {unit}, trails it "
        f"(CI below zero) in {below}, no claim either way in {open_}"
    )
    if none:
        text += f" ({none} without an interval)"
    return text


def extremes(diffs: Sequence[tuple[float, str]]) -> str:
    """'largest gain +6.1 points at X; largest loss -4.7 points at Y' over (difference, where)
    pairs: a gain is named only if some difference is positive, a loss only if one is negative.
    Point differences, not claims: the counts say which intervals exclude zero."""
    parts = []
    top = max(diffs, key=lambda d: d[0], default=None)
    if top is not None and shown(top[0]) > 0:
        parts.append(f"largest gain {signed_points(top[0])} at {top[1]}")
    bottom = min(diffs, key=lambda d: d[0], default=None)
    if bottom is not None and shown(bottom[0]) < 0:
        parts.append(f"largest loss {signed_points(bottom[0])} at {bottom[1]}")
    return "; ".join(parts)


def _p(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def _tested(p: float | None, p_holm: float | None) -> str:
    if p is None:
        return "untested: n < 2 on a side"
    holm = "significant" if p_holm is not None and p_holm < 0.05 else "not significant"
    return f"p = {_p(p)}, {holm} after Holm"


def comparison_summary(comparisons: Sequence) -> str:
    """The results table in a sentence: how many comparisons differ after Holm, then the largest
    gain (a positive difference) and the largest loss (a negative one), each with its p.

    `comparisons`: `stats.Comparison`s (arm, baseline, diff, p, p_holm)."""
    tested = [c for c in comparisons if c.p_holm is not None]
    if tested:
        sig = [c for c in tested if c.p_holm < 0.05]
        up = sum(shown(c.diff) > 0 for c in sig)
        text = (
            f"{len(sig)} of {len(tested)} tested comparisons differ from their baseline at "
            f"p < 0.05 after Holm ({up} above, {len(sig) - up} below)"
        )
    else:
        text = (
            f"{len(comparisons)} comparisons with the baseline, none testable "
            "(every test needs n ≥ 2 on both sides)"
        )
    top = max(comparisons, key=lambda c: c.diff)
    bottom = min(comparisons, key=lambda c: c.diff)
    if shown(top.diff) > 0:
        text += (
            f"; largest gain: {top.arm} over {top.baseline}, {signed_points(top.diff)} "
            f"({_tested(top.p, top.p_holm)})"
        )
    else:
        text += "; no arm is above its baseline"
    if shown(bottom.diff) < 0:
        text += (
            f"; largest loss: {bottom.arm} under {bottom.baseline}, "
            f"{signed_points(bottom.diff)} ({_tested(bottom.p, bottom.p_holm)})"
        )
    return text


def design_phrase(design: str) -> str:
    """The design's name and what it means for a main effect (a key of DESIGNS)."""
    return DESIGNS[design]


def main_effect(factor: str, levels: Sequence[tuple[str, float, int]]) -> str:
    """One factor's main effect from its levels' (value, mean, n): the highest and lowest level
    and the spread between them, 'mode: shared 79.7% (n=3) over vit 72.0% (n=3), 7.7 points'.
    A spread of means, not a claim: the paired differences carry the intervals."""
    high = max(levels, key=lambda x: x[1])
    low = min(levels, key=lambda x: x[1])
    if high[1] == low[1]:
        return f"{factor}: every level at {high[1] * 100:.1f}%"
    return (
        f"{factor}: {high[0]} {high[1] * 100:.1f}% (n={high[2]}) over {low[0]} "
        f"{low[1] * 100:.1f}% (n={low[2]}), a spread of {points(high[1] - low[1])}"
    )
