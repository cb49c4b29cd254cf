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
                self._line(
                    f"trial {number:>4} {info['arm']:<28} {_params(info['params'])}  started"
                )
        elif kind == "epoch":
            self.running.setdefault(number, info).update(info)
        elif kind == "end":
            self.running.pop(number, None)
            self.finished += 1
            acc = info.get("val_acc")
            acc_text = f"val_acc {acc:6.2%}" if isinstance(acc, float) else "val_acc    -  "
            epoch = info.get("epoch")
            epoch_text = f"ep {int(epoch):>3}" if epoch is not None else "ep   -"
            extra = f"  {info['error']}" if info.get("error") else ""
            self._line(
                f"trial {number:>4} {info['arm']:<28} {_params(info['params'])}  {epoch_text}  "
                f"{acc_text}  {info['status']:<8} [{self._progress()}]{extra}"
            )
        if self.tty:
            self._status()

    def _status(self) -> None:
        parts = [
            f"#{n} ep{int(i.get('epoch') or 0)} {i.get('val_acc') or 0:.1%}"
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


def _params(params: dict[str, Any]) -> str:
    text = " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
    )
    return f"{text:<36}"
