"""One training, for humans: a per-epoch table, then one JSON line with the result.

    python -m trainers --mode shared --dataset fashion_mnist --fraction 0.1 --epochs 5 \\
        --preset tiny --seed 0

Every `TrainConfig` field is an option (`--hint-distance l2_mse`, `--hint-layers 0,2`, ...);
`--help` lists them with the choices, default and reason each field has in `trainers/config.py`.
"""

from __future__ import annotations

import json
import sys

from trainers.cli import ArgParser, add_dataclass_options, program, run_cli
from trainers.config import TrainConfig, field_choices

# Columns of the live table: (metric, header, format).
_COLUMNS = (
    ("epoch", "epoch", "{:>5.0f}"),
    ("train_loss", "loss", "{:>8.4f}"),
    ("val_acc", "val_acc", "{:>8.2%}"),
    ("val_acc_agent", "agent", "{:>8.2%}"),
    ("hint_weight", "hint_w", "{:>7.3f}"),
    ("lr", "lr", "{:>9.2e}"),
    ("epoch_seconds", "sec", "{:>6.1f}"),
    ("images_per_second", "img/s", "{:>7.0f}"),
)


def build_parser() -> ArgParser:
    parser = ArgParser(
        prog=program("python -m trainers"),
        description="Train one configuration (ViT, agent CNN, joint or shared bootstrapping): a "
        "table per epoch on stderr, then one JSON line with the config and the result.",
    )
    add_dataclass_options(
        parser, TrainConfig, choices=field_choices, aliases={"data_fraction": ["--fraction"]}
    )
    parser.add_argument("--quiet", action="store_true", help="print only the result line")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    values = {k: v for k, v in vars(args).items() if v is not None and k != "quiet"}
    config = TrainConfig.from_dict(values)
    from trainers.training import train  # after parsing: --help and bad options need no torch

    printed_header = False

    def report(metrics: dict[str, float]) -> None:
        nonlocal printed_header
        if args.quiet:
            return
        cols = [c for c in _COLUMNS if c[0] in metrics]
        if not printed_header:
            print(" ".join(f"{h:>{len(fmt.format(0.0))}}" for _, h, fmt in cols), file=sys.stderr)
            printed_header = True
        print(" ".join(fmt.format(metrics[k]) for k, _, fmt in cols), file=sys.stderr, flush=True)

    result = train(config, report)
    print(json.dumps({"config": config.to_dict(), "result": result}, sort_keys=True))
    return 0


def cli() -> None:
    """The `bootstudy-train` console script."""
    run_cli(main)


if __name__ == "__main__":
    cli()
