"""The report on disk is always whole, the old one or the new one, never cut off: not for a reader
that opens it while it is rewritten (a browser reloading it, a web server serving it), nor after a
SIGKILL mid-write. It used to be written in place: truncated first, then filled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from reports import build_report
from reports.synthetic import make_synthetic_study

REPO = Path(__file__).resolve().parents[2]


def _whole(data: bytes) -> bool:
    return data.rstrip().endswith(b"</html>")


def test_a_report_being_rewritten_is_never_seen_half_written(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    make_synthetic_study(url, "big", n_trials=300, epochs=12, seed=3)  # a page of several MB
    out = build_report("big", url, tmp_path / "big.html")
    done, reads, cut = threading.Event(), [0], []

    def read_all_the_time() -> None:
        while not done.is_set():
            data = out.read_bytes()
            reads[0] += 1
            if not _whole(data):
                cut.append(len(data))

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    try:
        for _ in range(4):
            build_report("big", url, out)
    finally:
        done.set()
        reader.join()
    assert reads[0] > 20, reads  # the reader really read while the report was rewritten
    assert cut == [], f"{len(cut)} of {reads[0]} reads found the report cut off"


def test_a_report_killed_while_written_leaves_the_old_one_whole(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    make_synthetic_study(url, "big", n_trials=300, epochs=12, seed=3)
    out = tmp_path / "big.html"
    command = [sys.executable, "-m", "reports", "--study", "big", "--storage", url]
    command += ["--out", str(out)]
    assert subprocess.run(command, cwd=REPO, capture_output=True, timeout=300).returncode == 0
    before = out.stat().st_size
    for delay in (1.0, 2.0, 3.0, 4.0, 5.0):  # across loading, building and writing
        proc = subprocess.Popen(command, cwd=REPO)
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert _whole(out.read_bytes()) and out.stat().st_size > 0.5 * before
