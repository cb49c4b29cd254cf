"""`python -m reports --study NAME [--storage URL] [--out PATH]`: write one study's report.

Bad input (unknown study, bad URL, missing database) prints one line on stderr and exits 2.
"""

from __future__ import annotations

from trainers.cli import ArgParser, program, run_cli
from trainers.home import default_storage


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
