"""One training, for humans: a progress bar with an ETA, a line per epoch, a closing table with
the test accuracy, then one JSON line with the config and the result (stdout, for scripts).

    python -m trainers --mode shared --fraction 0.02 --epochs 2 --max-eval-images 500 --seed 0
    python -m trainers --mode vit --fraction 0.02 --epochs 2 --save runs/weights/my-vit

Every `TrainConfig` field is an option (`--hint-distance l2_mse`, `--hint-layers 0,2`, ...);
`--help` lists them with the choices, default and reason each field has in `trainers/config.py`.
`--save DIR` keeps the best-validation epoch's weights (trainers/weights.py says how to load them).
"""

from __future__ import annotations

import ast
import functools
import json
import sys
from pathlib import Path
from typing import Any

from trainers.cli import ArgParser, add_dataclass_options, program, run_cli
from trainers.config import MODEL_PRESETS, TrainConfig, field_choices

# Columns of the per-epoch lines: (metric, header, format).
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

# Rows of the closing table: (result key, label, format).
_RESULT_ROWS = (
    ("test_acc", "test accuracy", "{:.2%}"),
    ("test_acc_agent", "test accuracy, agent", "{:.2%}"),
    ("best_val_acc", "best validation accuracy", "{:.2%}"),
    ("val_acc", "last validation accuracy", "{:.2%}"),
    ("params_vit", "parameters, ViT", "{:,.0f}"),
    ("params_agent_own", "parameters, agent's own", "{:,.0f}"),
    ("train_images", "training images", "{:,.0f}"),
    ("epochs_run", "epochs", "{:.0f}"),
    ("seconds", "wall time (s)", "{:.1f}"),
)

_HERE = Path(__file__).resolve().parent


@functools.cache
def _registered(filename: str, function: str) -> tuple[str, ...]:
    """Names registered in a module by `function("name")` or `function(Cls("name", ...))`, read
    from its source: --help lists a registry's names without importing torch to fill it
    (tests/test_trainer_cli.py checks the list against the live registry)."""
    names = []
    for node in ast.walk(ast.parse((_HERE / filename).read_text())):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == function):
            continue
        arg = node.args[0] if node.args else None
        if isinstance(arg, ast.Call) and arg.args:
            arg = arg.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            names.append(arg.value)
    return tuple(names)


@functools.cache
def _tuple_constant(filename: str, name: str) -> tuple[str, ...]:
    for node in ast.parse((_HERE / filename).read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return tuple(ast.literal_eval(node.value))
    return ()


def choices(name: str) -> tuple[Any, ...] | None:
    """Allowed values of a field for --help: `field_choices`, plus the registries' names."""
    extra = {
        "preset": lambda: tuple(MODEL_PRESETS),
        "dataset": lambda: _registered("datasets.py", "register_dataset"),
        "agent_design": lambda: _registered("agent.py", "register_agent_design"),
        "agent_stem": lambda: _tuple_constant("agent.py", "AGENT_STEMS"),
    }
    return extra[name]() if name in extra else field_choices(name)


def build_parser() -> ArgParser:
    parser = ArgParser(
        prog=program("python -m trainers"),
        description="Train one configuration (ViT, agent CNN, joint or shared bootstrapping): a "
        "progress bar and a line per epoch, a closing table with the test accuracy (stderr), "
        "then one JSON line with the config and the result (stdout).",
    )
    add_dataclass_options(
        parser, TrainConfig, choices=choices, aliases={"data_fraction": ["--fraction"]}
    )
    parser.add_argument("--quiet", action="store_true", help="print only the result line")
    parser.add_argument(
        "--save",
        metavar="DIR",
        help="keep the best-validation epoch's weights there: one state_dict per network "
        "(vit.pt, ...) and config.json with their test accuracy",
    )
    return parser


class _Progress:
    """A tqdm bar over every step of the run (its ETA is the whole run's), with a line per epoch
    printed above it. On a non-terminal stderr tqdm draws nothing and only the lines remain."""

    def __init__(self, epochs: int, quiet: bool):
        from tqdm import tqdm

        self.epochs, self.quiet = epochs, quiet
        self.bar = tqdm(
            total=None,
            unit="step",
            file=sys.stderr,
            disable=True if quiet else None,  # None: off when stderr is not a terminal
            dynamic_ncols=True,
            leave=False,
        )
        self.header = False

    def step(self, epoch: int, step: int, steps_per_epoch: int) -> None:
        if self.bar.total is None:
            self.bar.reset(total=self.epochs * steps_per_epoch)
        self.bar.set_description(f"epoch {epoch + 1}/{self.epochs}", refresh=False)
        self.bar.update(1)

    def epoch(self, metrics: dict[str, float]) -> None:
        if self.quiet:
            return
        cols = [c for c in _COLUMNS if c[0] in metrics]
        if not self.header:
            self._write(" ".join(f"{h:>{len(fmt.format(0.0))}}" for _, h, fmt in cols))
            self.header = True
        self._write(" ".join(fmt.format(metrics[k]) for k, _, fmt in cols))

    def _write(self, line: str) -> None:
        self.bar.write(line, file=sys.stderr)
        sys.stderr.flush()

    def close(self) -> None:
        self.bar.close()


def result_table(result: dict[str, Any], saved: dict[str, Any] | None = None) -> str:
    """The closing table: the numbers a person looks for, one per row."""
    rows = [(label, fmt.format(result[key])) for key, label, fmt in _RESULT_ROWS if key in result]
    if saved is not None:
        rows.append(
            (
                f"saved weights (epoch {saved['epoch']})",
                f"test {saved['test_acc']:.2%}, val {saved['val_acc']:.2%}",
            )
        )
    width = max(len(label) for label, _ in rows)
    return "\n".join(f"{label:<{width}}  {value}" for label, value in rows)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    values = {k: v for k, v in vars(args).items() if v is not None and k not in ("quiet", "save")}
    config = TrainConfig.from_dict(values)
    if args.save:
        _check_save_dir(Path(args.save))
    # after parsing: --help and bad options need no torch
    from trainers.training import train
    from trainers.weights import BestWeights, save_weights

    progress = _Progress(config.epochs, args.quiet)
    best = BestWeights() if args.save else None
    try:
        result = train(config, progress.epoch, checkpoint=best, on_step=progress.step)
    finally:
        progress.close()
    saved = save_weights(args.save, config, best) if best is not None else None
    if not args.quiet:
        print(result_table(result, saved), file=sys.stderr)
        if saved is not None:
            print(f"weights:  {Path(args.save).resolve()}", file=sys.stderr)
    print(json.dumps({"config": config.to_dict(), "result": result}, sort_keys=True))
    return 0


def _check_save_dir(path: Path) -> None:
    """Before training: a --save that cannot be written fails now, not after the last epoch."""
    from trainers.errors import ConfigError
    from trainers.outputs import check_writable_dir
    from trainers.weights import check_weights_dir

    if path.suffix in (".db", ".sqlite", ".sqlite3") or (path.exists() and not path.is_dir()):
        raise ConfigError(f"--save expects a directory for the weights, got '{path}'")
    check_weights_dir(path)  # no file in it that is a database or not weights of ours
    check_writable_dir(path, "weights")


def cli() -> None:
    """The `bootstudy-train` console script."""
    run_cli(main)


if __name__ == "__main__":
    cli()
