"""`StudyConfig`: one study, fully resolved (space, budget, resources, storage) up front."""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any

from search_spaces import Arm, SearchSpace, get_space
from search_spaces.designs import DESIGNS
from trainers.config import MAX_EPOCHS, MODEL_PRESETS, TrainConfig, strict_from_dict
from trainers.errors import ConfigError
from trainers.home import default_storage, runs_dir
from trainers.modes import MODES, used_fields

__all__ = ["StudyConfig", "resolve_preset", "asha_rungs"]

STUDY_PRESETS = ("smoke", "cpu", "gpu")
# Upper bounds of a study's numbers, checked before anything is created: each far above any real
# study, far below what breaks something (--epochs 10**30 once started training, with ~100 rungs).
# MAX_EPOCHS is trainers.config's: one bound for studies and the trainer
MAX_TRIALS_PER_ARM = 100_000  # TPE itself slows to seconds per ask past a few thousand
MAX_FINAL_SEEDS = 1_000  # paired seeds for a CI: 30 already give a tight one
MAX_RETRIES = 100  # a trial that raised 100 times will raise again
MAX_TRIAL_TIMEOUT = 30 * 24 * 3600.0  # 30 days, in seconds
MAX_CONCURRENCY = 100_000  # trials at once: more than any cluster has CPUs
# Seeds reach numpy (< 2**32) and trials (arm_search: seed*1000 + index, final: seed+1000+i)
MAX_SEED = 2**20
# TrainConfig fields the study itself sets for every trial, and the option that sets them.
STUDY_OWNED = {
    "seed": "--seed (final runs take seed+1000, seed+1001, ...)",
    "epochs": "--epochs (ASHA's max_t)",
    "dataset": "--dataset",
    "data_dir": "--data-dir",
    "device": "--gpus-per-trial (trials use cuda when given GPUs)",
}


@dataclass(frozen=True)
class StudyConfig:
    space: str  # a registered search space (search_spaces.list_spaces())
    name: str  # study name; per-arm Optuna studies are named "<name>/<arm>"
    preset: str  # smoke | cpu | gpu (resolved from auto)
    dataset: str = "fashion_mnist"  # what every trial trains on
    data_dir: str | None = None  # the dataset's own lookup order when None
    # one SQL URL: our tables and Optuna's; SQLite (nothing to start) in the runs directory
    storage: str = field(default_factory=default_storage)
    trials_per_arm: int | None = None  # None: the preset's budget
    epochs: int | None = None  # ASHA max_t; None: the preset's budget
    grace_epochs: int | None = None  # ASHA grace period; None: the preset's budget
    reduction_factor: float | None = None  # ASHA's rf; None: the preset's budget
    final_seeds: int | None = None  # re-runs of each arm's best config on new seeds
    concurrency: int = 0  # trials at once; 0: as many as the CPUs/GPUs allow
    cpus_per_trial: float = 1.0  # Ray resources of one trial; torch uses that many threads
    gpus_per_trial: float = 0.0  # fractions pack small trials on one GPU (0.25: four per GPU)
    address: str | None = None  # an existing Ray cluster; None starts Ray on this machine
    seed: int = 0  # TPE's seed and the trials' base seed
    retries: int = 0  # Ray re-runs of a trial that raised (NonFiniteLoss will raise again)
    # seconds one trial may train before it fails (a hung trial would hold its CPUs/GPU forever)
    trial_timeout: float | None = None
    # Ray's results and the reports go below it (trainers.home: not the working directory)
    results_dir: str = field(default_factory=lambda: str(runs_dir()))
    overrides: dict[str, Any] = field(default_factory=dict)  # TrainConfig values for every trial
    arm_values: dict[str, Any] = field(default_factory=dict)  # factor -> values, replacing the
    #                                                             preset's (e.g. other fractions)
    design: str | None = None  # factorial | ofat; None: the space's own cells, else factorial
    base: dict[str, Any] | None = None  # TrainConfig values every arm starts from (--base): OFAT's
    #                                     base cell, and no search (the base fixes the rest)
    # final runs keep their best-validation weights in <results_dir>/weights/<study>/trial-<n>/:
    # the trained models are what a study is for (a few MB each at the CPU presets)
    save_weights: bool = True
    # Ray Tune's TensorBoard logger, an event file per trial under <results_dir>/ray/: opt-in,
    # as it costs per epoch (docs/benchmarks.md)
    tensorboard: bool = False

    def __post_init__(self) -> None:
        space = get_space(self.space)
        if self.preset not in STUDY_PRESETS:
            raise ConfigError(
                f"unknown preset '{self.preset}'; choose from: auto, {', '.join(STUDY_PRESETS)}"
            )
        budget = space.budget(self.preset)
        if self.design is not None and self.design not in DESIGNS:
            raise ConfigError(f"unknown design '{self.design}'; choose from: {', '.join(DESIGNS)}")
        if self.base is not None:
            self._check_base(self.base)
        epochs = self.epochs if self.epochs is not None else budget.epochs
        defaults = {
            "trials_per_arm": budget.trials_per_arm,
            "epochs": budget.epochs,
            "grace_epochs": min(budget.grace_epochs, epochs) if epochs > 0 else 1,
            "reduction_factor": budget.reduction_factor,
            # a designed study without a search is nothing but its replicates: at least 3
            "final_seeds": budget.final_seeds or (3 if self.searchless else 0),
        }
        for key, value in defaults.items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        checks = [
            _within("--trials", self.trials_per_arm, 1, MAX_TRIALS_PER_ARM),
            _within("--epochs", self.epochs, 1, MAX_EPOCHS),
            _within("--final-seeds", self.final_seeds, 0, MAX_FINAL_SEEDS),
            _within("--retries", self.retries, 0, MAX_RETRIES),
            _within("--seed", self.seed, 0, MAX_SEED),
            _within("--concurrency", self.concurrency, 0, MAX_CONCURRENCY),
            (
                1 <= self.grace_epochs <= self.epochs,
                f"--grace-epochs must be in [1, epochs={self.epochs}], got {self.grace_epochs}",
            ),
            (
                self.reduction_factor > 1,
                f"--reduction-factor must be > 1, got {self.reduction_factor}",
            ),
            (
                self.final_seeds >= 1 or not self.searchless,
                "--final-seeds must be >= 1: this study has nothing to search, so its arms run "
                "only as replicated final runs",
            ),
            (self.cpus_per_trial > 0, f"--cpus-per-trial must be > 0, got {self.cpus_per_trial}"),
            (self.gpus_per_trial >= 0, f"--gpus-per-trial must be >= 0, got {self.gpus_per_trial}"),
            (
                self.trial_timeout is None or 0 < self.trial_timeout <= MAX_TRIAL_TIMEOUT,
                "--trial-timeout must be a positive number of seconds, at most "
                f"{MAX_TRIAL_TIMEOUT:,.0f} (30 days), got "
                + (f"{self.trial_timeout:g}" if self.trial_timeout is not None else "none"),
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if not self.name or "/" in self.name or len(self.name) > 200:
            raise ConfigError(f"study name must be 1-200 characters without '/', got {self.name!r}")
        _check_address(self.address)
        self._check_trainer_configs()

    def _check_trainer_configs(self) -> None:
        """Every arm must give a valid TrainConfig before anything is written or started."""
        space = self.search_space
        clash = sorted(set(self.overrides) & (space.arm_fields() | {d.name for d in space.search}))
        if clash:
            raise ConfigError(
                f"--set {', '.join(clash)}: set by the space '{space.name}' itself (an arm factor "
                "or a searched parameter); use --arm FACTOR=V1,V2 for arm factors"
            )
        owned = sorted(set(self.overrides) & set(STUDY_OWNED))
        if owned:
            raise ConfigError(
                f"--set {', '.join(owned)}: the study sets this itself; use "
                + ", ".join(STUDY_OWNED[k] for k in owned)
            )
        for name in ("cpus_per_trial", "gpus_per_trial", "reduction_factor"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"--{name.replace('_', '-')} must be finite")
        # Every arm with every combination of its searched ranges' ends: a range that reaches an
        # invalid value (a negative lr, a field the arm's mode does not use) is refused now, not
        # trial after trial in the middle of the study.
        probes = space.extreme_draws()
        base = self.trainer_base()
        for arm in self.arms():
            overrides = self.trial_overrides(arm)
            for params in probes:
                try:
                    space.trial_config(self.preset, arm, params, base, overrides)
                except ConfigError as err:
                    where = f"arm {arm.name}" + "".join(
                        f", searched {k}={v}" for k, v in params.items()
                    )
                    raise ConfigError(f"{where}: {err}") from None

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> StudyConfig:
        return strict_from_dict(cls, values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def search_space(self) -> SearchSpace:
        return get_space(self.space)

    def arms(self) -> list[Arm]:
        base = {k: v for k, v in (self.base or {}).items() if k in self.search_space.arms}
        return self.search_space.arm_grid(self.preset, self.arm_values, self.design, base)

    @property
    def searchless(self) -> bool:
        """No search phase: the space searches nothing, or a --base fixes what it would search.
        Every arm then runs its fixed configuration on the final seeds only (paired: arm for
        arm the same seeds, so the same initialisation stream and batch order)."""
        return not self.search_space.search or self.base is not None

    def base_values(self) -> dict[str, Any]:
        """The --base values every trial starts from, minus what the study sets itself and the
        model fields a `preset` arm factor must fill."""
        skip = set(STUDY_OWNED) | {"preset"}
        if "preset" in self.search_space.arms:
            skip |= set(MODEL_PRESETS["tiny"])
        return {k: v for k, v in (self.base or {}).items() if k not in skip}

    def trial_overrides(self, arm: Arm | None = None) -> dict[str, Any]:
        """What an arm's trials take over the space's defaults: the --base, then --set. The base's
        mode-specific fields that the arm's mode does not use are left out (an OFAT arm mode=vit
        from a shared base keeps the base's lr, not its hint weight)."""
        base = self.base_values()
        mode = (arm.factors.get("mode") if arm is not None else None) or base.get("mode")
        if mode is not None and mode in MODES:
            base = used_fields(mode, base)
        return {**base, **self.overrides}

    def _check_base(self, base: dict[str, Any]) -> None:
        unknown = sorted(set(base) - set(TrainConfig.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"--base names unknown TrainConfig fields: {', '.join(unknown)}")

    def trainer_base(self) -> dict[str, Any]:
        """TrainConfig values every trial of the study shares."""
        base: dict[str, Any] = {"dataset": self.dataset, "epochs": self.epochs}
        if self.data_dir is not None:
            base["data_dir"] = self.data_dir
        if self.gpus_per_trial == 0:
            base["device"] = "cpu"
        return base

    def optuna_study_name(self, arm: Arm | str) -> str:
        """The Optuna study of one arm (an `Arm` or its name): "<study>/<arm>"."""
        return f"{self.name}/{arm.name if isinstance(arm, Arm) else arm}"

    def rungs(self) -> list[int]:
        """The epochs at which ASHA decides (see `asha_rungs`)."""
        return asha_rungs(self.grace_epochs, self.reduction_factor, self.epochs)

    def baselines(self) -> dict[str, str | None]:
        """Each arm's baseline arm: the arm with the space's baseline factor values, its other
        factors kept (mode=vit at the same fraction); None for a baseline itself, for every arm
        of a space without a baseline, and where the grid lacks the twin (e.g. --arm mode=shared).
        """
        baseline = self.search_space.baseline or {}
        arms = self.arms()
        names = {tuple(a.factors.items()): a.name for a in arms}
        out: dict[str, str | None] = {}
        # Designed cells (paper_table4) need not have a twin: then the one arm with the baseline's
        # values (mode=vit, scratch) is every arm's baseline.
        sole = [a.name for a in arms if all(a.factors.get(k) == v for k, v in baseline.items())]
        for arm in arms:
            twin = {**arm.factors, **{k: v for k, v in baseline.items() if k in arm.factors}}
            match = names.get(tuple(twin.items())) if baseline else None
            if match is None and baseline and len(sole) == 1 and self.search_space.cells:
                match = sole[0]
            out[arm.name] = None if match == arm.name else match
        return out

    def facts(self) -> dict[str, Any]:
        """What the study row stores beside the config, computed here once and read everywhere
        else: ASHA's rungs, each arm's baseline and the report's main view."""
        return {
            "rungs": self.rungs(),
            "baselines": self.baselines(),
            "main_view": self.search_space.main_view,
        }

    def report_config(self) -> dict[str, Any]:
        """What the study row stores as its config: this one plus what a reader needs alone."""
        space = self.search_space
        return {
            **self.to_dict(),
            "arm_factors": list(space.arms),
            "arms": [a.name for a in self.arms()],
            "objective": space.objective,
        }


def _within(option: str, value: int, low: int, high: int) -> tuple[bool, str]:
    """A check of the list in `StudyConfig.__post_init__`: `low <= value <= high`."""
    return low <= value <= high, f"{option} must be >= {low} and <= {high:,}, got {value:,}"


def asha_rungs(grace: int, reduction_factor: float, max_epochs: int) -> list[int]:
    """The epochs at which ASHA decides: the first epoch >= grace x rf^k, below `max_epochs`.

    Ray's ASHA keeps its milestones as grace x rf^k (not whole numbers when rf is not an integer)
    and records a trial at its first result with epoch >= the milestone; a trial that reaches
    `max_epochs` has completed, so that milestone decides nothing.

    >>> asha_rungs(1, 3, 50), asha_rungs(2, 1.5, 10)
    ([1, 3, 9, 27], [2, 3, 5, 7])
    """
    out, t = set(), float(max(grace, 1))
    while t < max_epochs and reduction_factor > 1:
        out.add(math.ceil(t - 1e-9))
        t *= reduction_factor
    return sorted(out)


def _check_address(address: str | None) -> None:
    """--address as Ray takes it: HOST:PORT, `auto`, or a ray:// client URL (reachability is
    checked when Ray starts, still before anything is written)."""
    if address is None or address == "auto" or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    valid_port = port.isdigit() and 0 < int(port) < 65536
    if not host or not valid_port or any(c.isspace() for c in host):
        raise ConfigError(f"--address must be HOST:PORT, auto or ray://HOST:PORT, got {address!r}")


def resolve_preset(preset: str, gpus_per_trial: float) -> tuple[str, str | None]:
    """`auto` picks gpu when CUDA is visible (and allowed), else cpu; says why."""
    if preset != "auto":
        return preset, None
    import torch  # deferred: the CLI answers --help and --list-spaces without importing torch

    if torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "x") != "":
        return "gpu", f"--preset auto: {torch.cuda.device_count()} CUDA device(s) found, using gpu"
    return "cpu", "--preset auto: no CUDA device found, using the cpu preset"
