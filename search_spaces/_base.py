"""What a search space is: arms (a grid the study compares) x a search inside each arm.

A space is declarative data plus one define-by-run function; registering it is one decorator:

    >>> @register_space
    ... def lr_only() -> SearchSpace:
    ...     return SearchSpace(
    ...         name="lr_only", description="learning rate of the shared mode",
    ...         arms={"mode": ("shared",)}, search=(Float("lr", 1e-4, 3e-3, log=True),))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from search_spaces.designs import design_cells
from trainers.config import TrainConfig
from trainers.errors import ConfigError
from trainers.registry import Registry

__all__ = [
    "SearchSpace",
    "Budget",
    "Arm",
    "Float",
    "Int",
    "Categorical",
    "SPACES",
    "register_space",
    "get_space",
    "list_spaces",
]


# --- distributions (each samples one TrainConfig field through an optuna.Trial) ------------------


@dataclass(frozen=True)
class _Range:
    """A numeric range of one TrainConfig field, sampled uniformly (log-uniformly with `log`)."""

    name: str  # a TrainConfig field
    low: float
    high: float
    log: bool = False
    when: Callable[[dict[str, Any]], bool] | None = None  # define-by-run: sample only if true
    _suggest: ClassVar[str]  # the optuna.Trial method, e.g. "suggest_float"
    _distribution: ClassVar[str]  # the optuna.distributions class it draws from

    def __post_init__(self) -> None:
        where = f"searched {self.name} in [{self.low}, {self.high}]"
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"{where}: the bounds must be finite")
        if self.low > self.high:
            raise ValueError(f"{where}: low must not exceed high")
        if self.log and self.low <= 0:
            raise ValueError(f"{where}: a log range needs low > 0")

    def sample(self, trial) -> Any:
        return getattr(trial, self._suggest)(self.name, self.low, self.high, log=self.log)

    def extremes(self) -> list[Any]:
        """The values a trial can take that are most likely to be invalid: both ends."""
        return [self.low, self.high]

    def optuna(self):
        """The Optuna distribution `sample` draws from."""
        import optuna.distributions

        kind = getattr(optuna.distributions, self._distribution)
        return kind(self.low, self.high, log=self.log)


@dataclass(frozen=True)
class Float(_Range):
    _suggest = "suggest_float"
    _distribution = "FloatDistribution"


@dataclass(frozen=True)
class Int(_Range):
    _suggest = "suggest_int"
    _distribution = "IntDistribution"


@dataclass(frozen=True)
class Categorical:
    """Choices are labels; `values` maps a label to the config value (Optuna wants primitives)."""

    name: str
    choices: tuple[Any, ...]
    values: Mapping[Any, Any] | None = None  # label -> TrainConfig value, e.g. "0,1" -> (0, 1)
    when: Callable[[dict[str, Any]], bool] | None = None

    def __post_init__(self) -> None:
        if not self.choices:
            raise ValueError(f"searched {self.name}: a categorical needs at least one choice")
        missing = [c for c in self.choices if self.values is not None and c not in self.values]
        if missing:
            raise ValueError(f"searched {self.name}: no value for the choices {missing}")

    def sample(self, trial) -> Any:
        label = trial.suggest_categorical(self.name, list(self.choices))
        return self.values[label] if self.values else label

    def extremes(self) -> list[Any]:
        """Every value a trial can take."""
        return [self.values[c] if self.values else c for c in self.choices]

    def optuna(self):
        """The Optuna distribution `sample` draws from (over the labels)."""
        from optuna.distributions import CategoricalDistribution

        return CategoricalDistribution(list(self.choices))


Distribution = Float | Int | Categorical


@dataclass(frozen=True)
class Budget:
    """How much a study spends per arm at one preset."""

    trials_per_arm: int  # Optuna trials in each arm's search
    epochs: int  # ASHA's max_t
    grace_epochs: int  # ASHA's grace period: no trial stops before this epoch
    reduction_factor: float = 2.0  # keep the top 1/rf at every rung
    final_seeds: int = 0  # re-runs of each arm's best config with new seeds, evaluated on test
    model_preset: str = "tiny"  # TrainConfig.preset
    arms: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)  # restrict factors (CPU)
    overrides: Mapping[str, Any] = field(default_factory=dict)  # e.g. cap eval images on CPU
    caveat: str = ""  # what this budget is known not to show; the report's header and --dry-run
    #                   print it (measured, see README "What the studies show")


@dataclass(frozen=True)
class Arm:
    """One cell of the arms grid."""

    factors: dict[str, Any]

    @property
    def name(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.factors.items())


@dataclass(frozen=True)
class SearchSpace:
    name: str
    description: str  # one line, shown by --list-spaces
    arms: dict[str, tuple[Any, ...]]  # factor (a TrainConfig field) -> values; the grid compared
    search: tuple[Distribution, ...]  # searched inside every arm
    fixed: dict[str, Any] = field(default_factory=dict)  # overrides applied to every trial
    arm_overrides: Callable[[dict[str, Any]], dict[str, Any]] | None = None  # per-arm fixed values
    objective: str = "val_acc"  # maximised
    baseline: dict[str, Any] | None = None  # factor values of the reference arm, e.g. mode=vit
    main_view: str = "arms"  # the report's main figure (reports.main_views): "fraction_curve"
    #                          for accuracy against data fraction, "arms" for effects and bars
    budgets: dict[str, Budget] = field(default_factory=dict)  # preset -> budget
    bundles: dict[str, dict[Any, dict[str, Any]]] = field(default_factory=dict)  # an arm factor
    #   that is a label for several TrainConfig values, e.g. method=impulse_vit -> {mode: vit,
    #   init: impulse, pool: gap}: methods that differ in several fields compared as one factor
    cells: tuple[dict[str, Any], ...] | None = None  # the arms outright (a designed table such
    #   as the paper's Table 4) instead of a grid; a cell names only the factors it sets
    base: dict[str, Any] = field(default_factory=dict)  # --design ofat's default base cell

    def __post_init__(self) -> None:
        known = set(TrainConfig.__dataclass_fields__)
        bundled = [f for values in self.bundles.values() for b in values.values() for f in b]
        plain_arms = [a for a in self.arms if a not in self.bundles]
        names = plain_arms + [d.name for d in self.search] + list(self.fixed) + bundled
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ValueError(f"space '{self.name}' names unknown TrainConfig fields: {unknown}")
        for factor, labels in self.bundles.items():
            missing = [v for v in self.arms.get(factor, ()) if v not in labels]
            if factor not in self.arms or factor in known or missing:
                raise ValueError(
                    f"space '{self.name}': bundle '{factor}' must be an arm factor that is not a "
                    f"TrainConfig field, with a bundle for each of its values (missing: {missing})"
                )
        clash = self.arm_fields() & {d.name for d in self.search}
        if clash:
            raise ValueError(f"space '{self.name}': {clash} is both an arm factor and searched")
        for cell in self.cells or ():
            if not set(cell) <= set(self.arms) or any(cell[k] not in self.arms[k] for k in cell):
                raise ValueError(f"space '{self.name}': cell {cell} is not in its factors' values")

    def arm_fields(self) -> set[str]:
        """The TrainConfig fields the arms set: plain factors and every bundle's fields."""
        bundled = {f for values in self.bundles.values() for b in values.values() for f in b}
        return {a for a in self.arms if a not in self.bundles} | bundled

    def arm_values(self, factors: Mapping[str, Any]) -> dict[str, Any]:
        """An arm's TrainConfig values: plain factors as they are, bundles expanded."""
        values: dict[str, Any] = {}
        for factor, value in factors.items():
            values.update(
                self.bundles[factor][value] if factor in self.bundles else {factor: value}
            )
        return values

    def budget(self, preset: str) -> Budget:
        if preset not in self.budgets:
            raise ConfigError(
                f"space '{self.name}' has no '{preset}' preset; choose from: "
                f"{', '.join(self.budgets)}"
            )
        return self.budgets[preset]

    def arm_grid(
        self,
        preset: str,
        values: Mapping[str, Any] | None = None,
        design: str | None = None,
        base: Mapping[str, Any] | None = None,
    ) -> list[Arm]:
        """The arms a study runs: the space's own cells, else the `design` (default factorial)
        over the preset's factor values (CPU: fewer) or `values` given. `base`: the OFAT base
        cell's factor values (default: the space's `base`, then each factor's first value)."""
        values = values or {}
        unknown = sorted(set(values) - set(self.arms))
        if unknown:
            raise ConfigError(
                f"space '{self.name}' has no arm factor {', '.join(unknown)}; its factors are: "
                f"{', '.join(self.arms)}"
            )
        restrict = {**self.budget(preset).arms, **values}
        # dict.fromkeys: repeated values (also 1 and 1.0) make one arm, not two with one budget
        factors = {k: tuple(dict.fromkeys(restrict.get(k, v))) for k, v in self.arms.items()}
        for factor, labels in self.bundles.items():
            unknown_labels = [v for v in factors[factor] if v not in labels]
            if unknown_labels:
                raise ConfigError(
                    f"space '{self.name}': {factor} has no value "
                    f"{', '.join(map(str, unknown_labels))}; choose from: "
                    f"{', '.join(map(str, labels))}"
                )
        if self.cells is not None and design is None:
            cells = [c for c in self.cells if all(c[k] in factors[k] for k in c)]
        else:
            cells = design_cells(design or "factorial", factors, {**self.base, **(base or {})})
        return [Arm(cell) for cell in cells]

    def sample(self, trial) -> dict[str, Any]:
        """Define-by-run: sample every distribution whose condition holds on what came before."""
        params: dict[str, Any] = {}
        for dist in self.search:
            if dist.when is None or dist.when(params):
                params[dist.name] = dist.sample(trial)
        return params

    def extreme_draws(self, most: int = 256) -> list[dict[str, Any]]:
        """The searched values a trial can take where validity is most at risk: every combination
        of each distribution's ends (its choices, for a categorical), following the `when`
        conditions as `sample` does; at most `most`, spread evenly over them (loss_weights has
        ~3,900 and building each config takes a millisecond). The plan builds a config from each
        before anything runs."""
        draws: list[dict[str, Any]] = [{}]
        for dist in self.search:
            grown = []
            for params in draws:
                if dist.when is None or dist.when(params):
                    grown += [{**params, dist.name: value} for value in dist.extremes()]
                else:
                    grown.append(params)
            draws = grown
        step = max(1, -(-len(draws) // most))  # ceil: the first and every step-th
        return draws[::step]

    def trial_config(
        self,
        preset: str,
        arm: Arm,
        params: dict[str, Any],
        base: dict[str, Any],
        overrides: Mapping[str, Any] | None = None,
    ) -> TrainConfig:
        """One trial's resolved trainer config.

        Later wins: base (dataset, epochs) < the space's fixed values < the preset's overrides <
        per-arm overrides < the user's `overrides` (--set) < the arm's factors < searched params.
        """
        budget = self.budget(preset)
        values = {"preset": budget.model_preset, "epochs": budget.epochs}
        values.update(base)
        values.update(self.fixed)
        values.update(budget.overrides)
        if self.arm_overrides is not None:
            values.update(self.arm_overrides(arm.factors))
        values.update(overrides or {})
        values.update(self.arm_values(arm.factors))
        values.update(params)
        return TrainConfig.from_dict(values)


SPACES: Registry[SearchSpace] = Registry("search space")


def register_space(builder: Callable[[], SearchSpace]) -> Callable[[], SearchSpace]:
    """Register the space a builder returns under its name; a duplicate name is an error."""
    space = builder()
    SPACES.add(space.name, space)
    return builder


def get_space(name: str) -> SearchSpace:
    return SPACES.lookup(name)


def list_spaces() -> list[str]:
    return SPACES.names()
