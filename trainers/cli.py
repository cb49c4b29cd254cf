"""Command-line plumbing shared by every bootstudy command: bad input is one line, exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from trainers.errors import BootstudyError

__all__ = ["ArgParser", "parse_value", "run_cli"]


def parse_value(text: str):
    """Command-line text as JSON where it parses (numbers, true, null, lists), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class ArgParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`prog: error: ...`) and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run `main`: user errors become one line on stderr and exit code 2; bugs keep tracebacks."""
    try:
        code = main(argv)
    except BootstudyError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
