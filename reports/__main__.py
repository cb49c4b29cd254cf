"""`python -m reports --study NAME [--storage URL] [--out PATH]`: write one study's report.

Bad input (unknown study, bad URL, missing database) prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import sys

from trainers.errors import BootstudyError

DEFAULT_STORAGE = "sqlite:///runs/studies.db"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reports", description=__doc__.splitlines()[0])
    parser.add_argument("--study", required=True, help="study name (bootstudy_studies.name)")
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help=f"default {DEFAULT_STORAGE}")
    parser.add_argument("--out", default=None, help="HTML path; default runs/reports/<study>.html")
    args = parser.parse_args(argv)
    from reports import build_report  # after parsing: --help stays instant

    try:
        out = build_report(args.study, args.storage, args.out)
    except BootstudyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
