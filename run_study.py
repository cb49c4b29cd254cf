#!/usr/bin/env python
"""Run a hyperparameter / ablation study of the bootstrapping trainer.

Ray Tune schedules the trials, Optuna (TPE, one study per arm) proposes configurations, ASHA (one
set of rungs per arm) stops weak trials early, and every trial lands in SQL.

    python run_study.py --space data_fraction                   # the main study, preset auto
    python run_study.py --space loss_weights --preset smoke     # a 2-minute look
    python run_study.py --list-spaces
    python run_study.py --space data_fraction --dry-run         # arms, search, budget; runs nothing
    python run_study.py --space data_fraction --study s1 --resume   # after a killed driver
    python run_study.py --space data_fraction --address HEAD:6379 \\
        --storage postgresql+psycopg://user@db/bootstudy            # on a Ray cluster
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from search_spaces import SPACES, get_space, list_spaces
from search_spaces.designs import DESIGNS
from study.base import load_base
from study.plan import StudyConfig, resolve_preset
from trainers.cli import ArgParser, parse_value, program, run_cli
from trainers.errors import ConfigError
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
        help="budget and model size: smoke (~2 min look), cpu (<=15 min on 2 cores), "
        "gpu (paper sizes); auto picks cpu or gpu from the hardware",
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
    return p


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


def print_spaces(out=sys.stdout) -> None:
    for name in list_spaces():
        space = SPACES[name]
        print(f"{name}: {space.description}", file=out)
        for factor, values in space.arms.items():
            print(f"    arms  {factor}: {', '.join(map(str, values))}", file=out)
        print(f"    search {', '.join(d.name for d in space.search)}", file=out)
        print(f"    presets {', '.join(space.budgets)}", file=out)


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
    args = build_parser().parse_args(argv)
    if args.list_spaces:
        print_spaces()
        return 0
    config, why = resolve(args)
    if why:
        print(why)
    if args.dry_run:
        print_plan(config)
        return 0
    from study.engine import mask_password
    from study.runner import run_study  # heavy imports (torch, Ray) only when running

    words = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    command = " ".join(shlex.quote(mask_password(w) if "://" in w else w) for w in words)
    run_study(config, command=command, resume=args.resume)
    if not args.no_report:
        write_report(config)
    return 0


def write_report(config: StudyConfig, out=sys.stdout) -> Path | None:
    """The study's report under <results-dir>/reports/, built from the store like
    `python -m reports` does; a report bug is a warning, never a lost study (its rows are in)."""
    from reports import build_report, default_out_path

    path = Path(config.results_dir) / "reports" / default_out_path(config.name).name
    try:
        path = build_report(config.name, config.storage, path).resolve()
    except Exception as err:
        print(f"warning: the report could not be built: {err}", file=out)
        return None
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
