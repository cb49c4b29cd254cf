"""`python -m reports --study NAME [--storage URL] [--out PATH]`: write one study's report.

Bad input (unknown study, bad URL, missing database, an --out that is the database or a file
this command did not write) prints one line on stderr and exits 2. Works from any folder, even
one holding a `reports/` folder (as the runs directory does), see `_own_packages`.
"""

from __future__ import annotations

import sys
from pathlib import Path

_PACKAGES = ("reports", "study", "trainers", "search_spaces")


def _own_packages() -> None:
    """Import bootstudy's packages from this checkout, never from folders of the working directory.

    `python -m` puts the working directory first on sys.path, so a plain `reports/` folder there
    (the runs directory holds one) became a namespace package named `reports` ("cannot import
    name 'build_report' from 'reports' (unknown location)"). Our root goes first instead, and a
    namespace package already imported under one of our names is forgotten.
    """
    root = str(Path(__file__).resolve().parents[1])
    if sys.path[:1] != [root]:
        sys.path.insert(0, root)
    for name in list(sys.modules):
        module = sys.modules[name]
        if name.partition(".")[0] in _PACKAGES and getattr(module, "__file__", None) is None:
            del sys.modules[name]  # a namespace package: a folder that is not ours


_own_packages()

from trainers.cli import ArgParser, program, run_cli  # noqa: E402
from trainers.home import default_storage  # noqa: E402


def build_parser() -> ArgParser:
    parser = ArgParser(
        prog=program("python -m reports"),
        description="Write one study's report: a self-contained HTML page, and its results table "
        "as Markdown and LaTeX beside it.",
    )
    parser.add_argument("--study", required=True, help="study name, as run_study.py --study")
    parser.add_argument("--storage", default=default_storage(), help="the study's SQL URL")
    parser.add_argument("--out", help="HTML path (none: <runs dir>/reports/<study>.html)")
    parser.add_argument(
        "--export",
        choices=("csv", "parquet"),
        help="instead of the report, write the study's trials and per-epoch metrics as two "
        "files (<study>-trials.<fmt>, <study>-metrics.<fmt>) in --out's folder, else "
        "<runs dir>/reports/",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.export:
        return _export(args)
    from reports import build_report  # after parsing: --help stays instant

    print(build_report(args.study, args.storage, args.out))
    return 0


def _export(args) -> int:
    from pathlib import Path

    from reports import default_out_path
    from reports.export import export_study

    folder = Path(args.out) if args.out else default_out_path(args.study).parent
    for path in export_study(args.study, args.storage, args.export, folder):
        print(path.resolve())
    return 0


def cli() -> None:
    """The `bootstudy-report` console script."""
    run_cli(main)


if __name__ == "__main__":
    cli()
