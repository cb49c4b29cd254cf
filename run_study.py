#!/usr/bin/env python
"""Run a hyperparameter / ablation study of the bootstrapping trainer.

Ray Tune schedules the trials, Optuna (TPE, one study per arm) proposes configurations, ASHA (one
set of rungs per arm) stops weak trials early, and every trial lands in SQL.

    python run_study.py --space data_fraction                   # the main study, preset auto
    python run_study.py --space loss_weights --preset smoke     # a look: 1-3 min on 2 cores
    python run_study.py --list-spaces
    python run_study.py --space data_fraction --dry-run         # arms, budget, estimated time
    python run_study.py --config study.yaml --trials 2          # options from YAML; flags win
    python run_study.py --space data_fraction --study s1 --resume   # after a killed driver
    python run_study.py --space data_fraction --address HEAD:6379 \\
        --storage postgresql+psycopg://user@db/bootstudy            # on a Ray cluster
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from search_spaces import SPACES, get_space, list_spaces
from search_spaces.designs import DESIGNS
from study.base import load_base
from study.plan import StudyConfig, resolve_preset
from trainers.cli import ArgParser, parse_value, program, run_cli
from trainers.errors import BootstudyError, ConfigError, Interrupted
from trainers.home import default_storage, runs_dir


def build_parser() -> ArgParser:
    p = ArgParser(
        prog=program("run_study.py"),
        description="Run a Ray Tune x Optuna x ASHA study of the bootstrapping trainer; every "
        "trial is stored in SQL (open it with optuna-dashboard), then the HTML report is written.",
    )
    spaces = ", ".join(list_spaces())
    p.add_argument("--space", metavar="{" + spaces.replace(" ", "") + "}", help="search space")
    p.add_argument("--list-spaces", action="store_true", help="list the search spaces and exit")
    p.add_argument(
        "--print-runs-dir",
        action="store_true",
        help="print the runs directory (absolute; --results-dir if given) and exit: "
        'tensorboard --logdir "$(bootstudy-study --print-runs-dir)/ray"',
    )
    p.add_argument(
        "--print-storage",
        action="store_true",
        help="print the storage URL (absolute; --storage if given) and exit: "
        'optuna-dashboard "$(bootstudy-study --print-storage)" works from any directory',
    )
    p.add_argument("--study", help="study name (none: <space>-<dataset>-<preset>)")
    p.add_argument("--dataset", default="fashion_mnist", help="registered dataset every trial uses")
    p.add_argument("--data-dir", help="where the dataset lives (none: its own lookup order)")
    p.add_argument(
        "--storage",
        default=default_storage(),
        help="SQL URL for results and Optuna; postgresql+psycopg://... for clusters",
    )
    p.add_argument(
        "--preset",
        default="auto",
        choices=("auto", "smoke", "cpu", "gpu"),
        help="budget and model size. Measured on 2 cores: smoke 1-3 min for most spaces "
        "(methods: 13-16 min); cpu 26 min for data_fraction, 70 min for methods, hours for "
        "scale; gpu: the paper's sizes, for a GPU. --dry-run estimates any space's time on "
        "this machine. auto picks cpu or gpu from the hardware",
    )
    p.add_argument("--trials", type=int, help="trials per arm (none: the preset's)")
    p.add_argument(
        "--epochs", type=int, help="max epochs per trial = ASHA's max_t (none: preset's)"
    )
    p.add_argument("--grace-epochs", type=int, help="ASHA grace period in epochs (none: preset's)")
    p.add_argument("--reduction-factor", type=float, help="ASHA reduction factor (none: preset's)")
    p.add_argument(
        "--final-seeds",
        type=int,
        help="re-run each arm's best config with this many new seeds, on test (none: preset's)",
    )
    p.add_argument(
        "--concurrency", type=int, default=0, help="trials at once (0: as the resources allow)"
    )
    p.add_argument("--cpus-per-trial", type=float, default=1.0, help="CPUs per trial")
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        help="GPUs per trial; fractions pack trials (0.25: four per GPU); "
        "none: 1 with the gpu preset, else 0",
    )
    p.add_argument("--address", help="join this Ray cluster (none: start Ray locally)")
    p.add_argument("--seed", type=int, default=0, help="sampler and trial seed")
    p.add_argument("--retries", type=int, default=0, help="re-runs of a trial that raised")
    p.add_argument(
        "--trial-timeout",
        type=float,
        metavar="SECONDS",
        help="fail a trial that trains longer than this (its finished epochs are kept; "
        "none: no limit)",
    )
    p.add_argument(
        "--results-dir",
        default=str(runs_dir()),
        help="Ray results and reports go below it (BOOTSTUDY_HOME moves the default)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="a TrainConfig value for every trial, e.g. --set hint_distance=l2_mse (repeatable; "
        "python -m trainers --help lists the fields)",
    )
    p.add_argument(
        "--arm",
        action="append",
        default=[],
        metavar="FACTOR=V1,V2",
        dest="arm_values",
        help="arm factor values replacing the preset's, e.g. --arm data_fraction=0.1,1",
    )
    p.add_argument(
        "--design",
        choices=DESIGNS,
        default=None,
        help="which arms: factorial (every combination of the factors, the default) or ofat "
        "(one factor at a time from --base); designed spaces (scale, paper_table4) list theirs",
    )
    p.add_argument(
        "--base",
        metavar="CONFIG_OR_TRIAL",
        help="the configuration every arm starts from: a JSON file or inline JSON of TrainConfig "
        "values (or the JSON line of python -m trainers), or a stored trial as STUDY:NUMBER; "
        "the base fixes what the space would search, so arms run only their final seeds",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue a study whose driver died; completed trials are kept",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved arms, search space and budget; run nothing",
    )
    p.add_argument("--no-report", action="store_true", help="skip the HTML report at the end")
    p.add_argument(
        "--no-save-weights",
        dest="save_weights",
        action="store_false",
        help="do not keep the final runs' best-validation weights (by default each goes to "
        "<results-dir>/weights/<study>/trial-<number>/: a state_dict per network + config.json)",
    )
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="write a TensorBoard event file per trial (Ray Tune's TBX logger) under "
        "<results-dir>/ray/; view with: tensorboard --logdir <results-dir>/ray",
    )
    p.add_argument(
        "--config",
        metavar="YAML",
        help="read options from a YAML file: keys are these options' names (trials: 4, "
        "set: {hint_distance: l2_mse}, arm: {data_fraction: [0.1, 1]}); flags given too win",
    )
    return p


# --- --config study.yaml --------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, over the options of a `--config` YAML file when one is given."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is None:
        return args
    parser.set_defaults(**yaml_options(parser, args.config))
    return parser.parse_args(argv)


# YAML keys whose value may be a mapping, and whether their option takes a value list (--arm).
_MAPPINGS = {"overrides": False, "arm_values": True}


def yaml_options(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    """A YAML file's options as parser defaults; an unknown key or a wrong type is one line."""
    import yaml

    try:
        loaded = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise ConfigError(f"--config: cannot read '{path}': {err.strerror}") from None
    except yaml.YAMLError as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(f"--config: '{path}' is not valid YAML: {first}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config: '{path}' must be a mapping of option: value")
    by_key: dict[str, argparse.Action] = {}  # the option's name (no_save_weights, set, arm)
    for action in parser._actions:
        if action.option_strings and action.dest not in ("help", "config"):
            for option in action.option_strings:
                by_key[option.lstrip("-").replace("-", "_")] = action
    out: dict[str, Any] = {}
    for key, value in loaded.items():
        action = by_key.get(str(key).replace("-", "_"))
        if action is None:
            raise ConfigError(
                f"--config: unknown option '{key}' in '{path}' (known: {', '.join(sorted(by_key))})"
            )
        out[action.dest] = _yaml_value(action, str(key), value)
    return out


def _yaml_value(action: argparse.Action, key: str, value: Any) -> Any:
    where = f"--config: option '{key}'"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        # `no_save_weights: true` turns saving off, as the flag does
        return (not value) if isinstance(action, argparse._StoreFalseAction) else value
    if action.dest in _MAPPINGS:
        if isinstance(value, dict):
            value = [f"{k}={_text(v, _MAPPINGS[action.dest])}" for k, v in value.items()]
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a mapping or a list of KEY=VALUE")
        return [str(v) for v in value]
    if action.dest == "base" and isinstance(value, dict):
        return _text(value, False)
    kind = action.type
    if kind in (int, float):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (kind is int and not float(value).is_integer()):
            raise ConfigError(f"{where} must be {'an integer' if kind is int else 'a number'}")
        value = kind(value)
    elif value is not None and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, got {value!r}")
    if action.choices is not None and value not in action.choices:
        raise ConfigError(f"{where}: '{value}' is not one of {', '.join(action.choices)}")
    return value


def _text(value: Any, as_list: bool) -> str:
    """A YAML value in the command line's KEY=VALUE form (values parse as JSON there)."""
    import json

    if as_list and isinstance(value, list):
        return ",".join(_text(v, False) for v in value)
    return value if isinstance(value, str) else json.dumps(value)


def _pairs(items: list[str], option: str, as_list: bool) -> dict:
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} expects KEY=VALUE, got {item!r}")
        values = [parse_value(v) for v in text.split(",")] if as_list else parse_value(text)
        out[key.strip()] = values
    return out


# Options that are StudyConfig fields of the same name, taken as given (resolve derives the rest).
_STORED_AS_GIVEN = (
    "dataset",
    "data_dir",
    "storage",
    "epochs",
    "grace_epochs",
    "reduction_factor",
    "final_seeds",
    "concurrency",
    "cpus_per_trial",
    "address",
    "seed",
    "retries",
    "trial_timeout",
    "results_dir",
    "design",
    "save_weights",
    "tensorboard",
)


def resolve(args) -> tuple[StudyConfig, str | None]:
    if not args.space:
        raise ConfigError("--space is required (see --list-spaces)")
    get_space(args.space)
    preset, why = resolve_preset(args.preset, args.gpus_per_trial or 0.0)
    gpus = (
        args.gpus_per_trial
        if args.gpus_per_trial is not None
        else (1.0 if preset == "gpu" else 0.0)
    )
    if args.study is not None and not args.study.strip():
        raise ConfigError("--study must not be empty (leave it out for <space>-<dataset>-<preset>)")
    name = args.study if args.study is not None else f"{args.space}-{args.dataset}-{preset}"
    config = StudyConfig(
        space=args.space,
        name=name,
        preset=preset,
        trials_per_arm=args.trials,
        gpus_per_trial=gpus,
        overrides=_pairs(args.overrides, "--set", as_list=False),
        arm_values=_pairs(args.arm_values, "--arm", as_list=True),
        base=load_base(args.base, args.storage) if args.base else None,
        **{field: getattr(args, field) for field in _STORED_AS_GIVEN},
    )
    from study.engine import normalize_url  # SQLAlchemy: only once the options parsed

    normalize_url(config.storage)  # a malformed or unsupported URL fails even with --dry-run
    return config, why


def absolute_storage(url: str) -> str:
    """A SQLite URL with its path made absolute: the same database from any directory."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "/"):
        return url
    return prefix + str(Path(url[len(prefix) :]).resolve())


def print_spaces(out=sys.stdout) -> None:
    for name in list_spaces():
        space = SPACES[name]
        print(f"{name}: {space.description}", file=out)
        for factor, values in space.arms.items():
            print(f"    arms  {factor}: {', '.join(map(str, values))}", file=out)
        print(f"    search {', '.join(d.name for d in space.search)}", file=out)
        print(f"    presets {', '.join(space.budgets)}", file=out)


def print_estimate(config: StudyConfig, out=sys.stdout) -> None:
    """The study's wall time on this machine, from a few training steps timed here."""
    from study.estimate import estimate
    from trainers.errors import BootstudyError

    try:
        result = estimate(config)
    except BootstudyError as err:  # e.g. the dataset is not here yet: the plan still stands
        print(f"estimated wall time: unknown ({err})", file=out)
        return
    for arm, seconds in result.trial_seconds.items():
        step = result.step_ms[arm]
        print(f"    {arm}: {step:.0f} ms/step, {seconds:.0f} s per full trial", file=out)
    print(result.describe(), file=out)


def print_plan(config: StudyConfig, out=sys.stdout) -> None:
    space = config.search_space
    arms = config.arms()
    print(f"study {config.name}: space {space.name} ({space.description})", file=out)
    from study.engine import mask_password  # SQLAlchemy: not for --help

    storage = mask_password(config.storage)
    print(f"preset {config.preset}, dataset {config.dataset}, storage {storage}", file=out)
    print(f"arms ({len(arms)}):", file=out)
    for arm in arms:
        print(f"    {arm.name}", file=out)
    print("search (per arm, Optuna TPE):" if space.search else "search: none", file=out)
    for d in space.search:
        when = " (conditional)" if d.when else ""
        rng = (
            f"[{d.low}, {d.high}]{' log' if d.log else ''}"
            if hasattr(d, "low")
            else "{" + ", ".join(map(str, d.choices)) + "}"
        )
        print(f"    {d.name}: {rng}{when}", file=out)
    example = space.trial_config(
        config.preset, arms[0], {}, config.trainer_base(), config.trial_overrides(arms[0])
    )
    print(
        f"model: preset {example.preset}, dim {example.embed_dim}, depth {example.depth}, "
        f"heads {example.num_heads}, patch {example.patch_size}",
        file=out,
    )
    caveat = space.budget(config.preset).caveat
    if caveat:
        print(f"caveat: {caveat}", file=out)
    if config.searchless:
        print(
            f"design: {config.design or ('its own arms' if space.cells else 'factorial')}, "
            f"nothing searched; each arm runs "
            f"{config.final_seeds} paired seed(s) for {config.epochs} epochs",
            file=out,
        )
        return
    total = len(arms) * config.trials_per_arm
    print(
        f"budget: {config.trials_per_arm} trials/arm = {total} trials, up to {config.epochs} "
        f"epochs each; ASHA grace {config.grace_epochs}, rf {config.reduction_factor:g}, "
        f"rungs {config.rungs()}; final: {config.final_seeds} seed(s) per arm",
        file=out,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list_spaces:
        print_spaces()
        return 0
    if args.print_runs_dir:
        print(Path(args.results_dir).resolve())
        return 0
    if args.print_storage:
        print(absolute_storage(args.storage))
        return 0
    config, why = resolve(args)
    if why:
        print(why)
    if args.dry_run:
        print_plan(config)
        print_estimate(config)
        return 0
    from study.engine import mask_password
    from study.runner import run_study  # heavy imports (torch, Ray) only when running

    words = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    command = " ".join(shlex.quote(mask_password(w) if "://" in w else w) for w in words)
    run_study(config, command=command, resume=args.resume)
    if not args.no_report:
        write_report(config)
    return 0


class ReportFailed(BootstudyError):
    """The study ran and is stored, but its report could not be written (exit 2, one line)."""


def write_report(config: StudyConfig, out=sys.stdout) -> Path:
    """The study's report under <results-dir>/reports/, built from the store like
    `python -m reports` does. A report that cannot be written (an unwritable directory, a full
    disk, a bug, Ctrl-C) is a failure, `ReportFailed` or `Interrupted`, never a warning with exit
    0; its one line says the results are safe in the store and how to build the report again."""
    from reports import build_report, default_out_path
    from study.engine import mask_password

    path = Path(config.results_dir) / "reports" / default_out_path(config.name).name
    storage = mask_password(config.storage)
    rebuild = shlex.join(["python", "-m", "reports", "--study", config.name, "--storage", storage])
    safe = f"the study's results are safe in {storage}; write the report again with: {rebuild}"
    try:
        path = build_report(config.name, config.storage, path).resolve()
    except BootstudyError as err:
        raise ReportFailed(f"{err}; {safe}") from None
    except KeyboardInterrupt:
        raise Interrupted(f"the report was not written; {safe}") from None
    except Exception as err:  # a bug in a report section: one line here, the trace is not news
        first = (str(err).strip().splitlines() or [""])[0][:200]
        raise ReportFailed(
            f"the report could not be built ({type(err).__name__}: {first}); {safe}"
        ) from None
    print(f"report:    {path}", file=out)
    try:  # optuna-dashboard shows each arm's study with a pointer to this file
        from study.arm_search import link_report
        from study.engine import optuna_storage

        link_report(config, optuna_storage(config.storage), str(path))
    except Exception as err:
        print(f"warning: the Optuna studies could not be linked to the report: {err}", file=out)
    return path


def cli() -> None:
    """The `bootstudy-study` console script."""
    run_cli(main)


if __name__ == "__main__":
    cli()
