"""How long each command takes to answer `--help`, next to a bare interpreter, in one run.

    .venv/bin/python bench/cli_help.py [--repeat 5]

Prints, per command, the median wall time of fresh processes and the ratio to `python -c pass`
(the interpreter's own start-up): what a user waits for before the options appear. Then the
modules `python -X importtime` says each `--help` spends most on (cumulative, top 3).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "python run_study.py --help": ["run_study.py", "--help"],
    "python -m trainers --help": ["-m", "trainers", "--help"],
    "python -m reports --help": ["-m", "reports", "--help"],
}


def _wall(args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def _heaviest_imports(args: list[str], top: int = 3) -> str:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *args], cwd=ROOT, capture_output=True, text=True
    )
    rows = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \| (\s*)(\S+)", line)
        if m and not m.group(2):  # top-level imports only: their cumulative time
            rows.append((int(m.group(1)), m.group(3)))
    rows.sort(reverse=True)
    return ", ".join(f"{name} {us / 1000:.0f} ms" for us, name in rows[:top])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    runs = {name: [] for name in COMMANDS}
    for _ in range(args.repeat):  # interleaved, so a burst of load hits every command alike
        for name, command in COMMANDS.items():
            runs[name].append(_wall(command))
    base = statistics.median(runs["python -c pass"])
    for name, values in runs.items():
        median = statistics.median(values)
        print(f"{name:<30} {median:6.3f} s  ({median / base:4.1f}x bare python)")
    for name, command in list(COMMANDS.items())[1:]:
        print(f"{name:<30} heaviest imports: {_heaviest_imports(command)}")


if __name__ == "__main__":
    main()
