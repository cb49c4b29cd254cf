"""One training, for humans: a per-epoch table, then one JSON line with the result.

    python -m trainers --mode shared --dataset fashion_mnist --fraction 0.1 --epochs 5 \\
        --preset tiny --seed 0

Every `TrainConfig` field is an option (`--hint-distance l2_mse`, `--hint-layers 0,2`, ...).
"""

from __future__ import annotations

import dataclasses
import json
import sys

from trainers.cli import ArgParser, parse_value, run_cli
from trainers.config import TrainConfig
from trainers.training import train

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


def _parse_value(text: str):
    """Options arrive as text; `0,2` is a list here (`--hint-layers 0,2`)."""
    if "," in text and not text.startswith("["):
        text = f"[{text}]"
    return parse_value(text)


def build_parser() -> ArgParser:
    parser = ArgParser(
        prog="python -m trainers",
        description="Train one configuration (ViT, agent CNN, joint or shared bootstrapping).",
    )
    for f in dataclasses.fields(TrainConfig):
        flags = [f"--{f.name.replace('_', '-')}"]
        if f.name == "data_fraction":
            flags.append("--fraction")
        parser.add_argument(
            *flags, dest=f.name, metavar="V", default=None, help=f"(TrainConfig.{f.name})"
        )
    parser.add_argument("--quiet", action="store_true", help="print only the result line")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    values = {k: _parse_value(v) for k, v in vars(args).items() if v is not None and k != "quiet"}
    config = TrainConfig.from_dict(values)
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


if __name__ == "__main__":
    run_cli(main)
