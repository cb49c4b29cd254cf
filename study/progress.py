"""A study's progress and ETA, from the trials seen so far (the live view prints it).

The rate is the study's own: trials finished per second of wall time since it started, which
already counts the trials running side by side. Search trials that ASHA stopped early are
shorter than final runs, so the ETA is rough while the phases change; it says how many trials it
rests on.
"""

from __future__ import annotations

__all__ = ["eta_seconds", "progress_text", "duration_text"]


def eta_seconds(finished: int, total: int, elapsed: float) -> float | None:
    """Seconds left at the rate so far; None before the first trial ends."""
    if finished <= 0 or elapsed <= 0:
        return None
    return max(0, total - finished) * elapsed / finished


def progress_text(finished: int, total: int, elapsed: float) -> str:
    """`3/48 trials, 2.1 min, ETA 31 min (from 3 trials)`."""
    text = f"{finished}/{total}, {elapsed / 60:.1f} min"
    left = eta_seconds(finished, total, elapsed)
    if left is None:
        return text
    if finished >= total:
        return text
    return f"{text}, ETA {duration_text(left)} (from {finished} trial{'s' if finished > 1 else ''})"


def duration_text(seconds: float, minute_digits: int = 0) -> str:
    """Seconds as a person reads them: 40 s, 12 min (7.5 min with `minute_digits=1`), 3.5 h
    (never "0.0 h"). An ETA is a guess in whole minutes; a measured cost keeps a digit."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.{minute_digits}f} min"
    return f"{seconds / 3600:.1f} h"
