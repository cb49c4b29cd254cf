"""A compact live view of a running study: one line per trial event, not a wall of Ray logs.

On a terminal, running trials are redrawn in place on one status line; in a log file (CI, nohup)
each trial gets a line when it starts and when it ends.
"""

from __future__ import annotations

import time
from typing import Any, TextIO

from study.progress import progress_text

__all__ = ["LiveView"]


class LiveView:
    def __init__(self, out: TextIO, total: int):
        self.out, self.total = out, total
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.running: dict[int, dict[str, Any]] = {}
        self.finished = 0
        self.started = time.monotonic()

    def phase(self, text: str) -> None:
        self._line(f"== {text}")

    def event(self, kind: str, info: dict[str, Any]) -> None:
        number = info["number"]
        if kind == "start":
            self.running[number] = info
            if not self.tty:
                self._line(f"{_name(info)} {info['arm']:<28} {_params(info['params'])}  started")
        elif kind == "epoch":
            self.running.setdefault(number, info).update(info)
        elif kind == "end":
            self.running.pop(number, None)
            self.finished += 1
            extra = f"  {info['error']}" if info.get("error") else ""
            self._line(
                f"{_name(info)} {info['arm']:<28} {_params(info['params'])}  {_epochs(info):<9} "
                f"{_accuracy(info)}  {info['status']:<8} [{self._progress()}]{extra}"
            )
        if self.tty:
            self._status()

    def _status(self) -> None:
        parts = [
            f"trial {n} {_epochs(i)} {_accuracy(i, end=False)}"
            for n, i in sorted(self.running.items())
        ]
        text = f"[{self._progress()}] running {len(self.running)}: " + "  ".join(parts)
        self.out.write("\r\x1b[2K" + text[:160])
        self.out.flush()

    def _progress(self) -> str:
        """Trials done of all, time so far and the study's ETA (study/progress.py)."""
        return progress_text(self.finished, self.total, time.monotonic() - self.started)

    def _line(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K")
        self.out.write(text + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K")
            self.out.flush()


def _name(info: dict[str, Any]) -> str:
    """'search trial   12': the phase, then the study's trial number (what the report, Ray's trial
    directory and the dashboard's `bootstudy_trial` attribute show)."""
    return f"{info.get('phase', ''):>6} trial {info['number']:>4}"


def _epochs(info: dict[str, Any]) -> str:
    """'ep 3/10': epochs done of the trial's budget (ASHA may stop it before the last)."""
    epoch, epochs = info.get("epoch"), info.get("epochs")
    done = str(int(epoch)) if epoch is not None else "-"
    return f"ep {done}/{epochs}" if epochs else f"ep {done}"


def _accuracy(info: dict[str, Any], end: bool = True) -> str:
    """'val 23.0%' while a trial trains; a final run's end line says its 'test 24.1%', what the
    run is for, after its last validation accuracy."""
    val = info.get("val_acc")
    text = f"val {val:5.1%}" if isinstance(val, float) else "val    -"
    test = info.get("test_acc")
    if end and isinstance(test, float) and info.get("phase") == "final":  # search: val only
        text += f"  test {test:5.1%}"
    return text


def _params(params: dict[str, Any]) -> str:
    text = " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )
    return f"{text:<36}"
