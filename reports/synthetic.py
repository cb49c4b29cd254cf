"""Synthetic studies for tests and benchmarks, written through the store like real ones.

A synthetic study is planned by the real `StudyConfig` of a registered search space (its arms,
rungs, baselines and main view), its configurations are drawn by the space's own `sample`, and it
is written with `Store.import_trials`: bootstudy's tables and, for every arm, the Optuna study
`<study>/<arm>` with its trials, so `optuna.load_study(...)` sees the same trials as the report.
Thousands of trials take seconds.

    >>> url = "sqlite:///runs/bench/demo.db"
    >>> make_synthetic_study(url, "demo", n_trials=200, epochs=20)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna

from search_spaces import get_space
from study.engine import optuna_storage
from study.plan import StudyConfig
from study.status import Phase, StudyStatus, TrialStatus
from study.store import ImportedTrial, Store

__all__ = ["make_synthetic_study", "write_study"]

# Metric names in the order they are logged; vit mode has no agent, so it skips the agent ones.
METRIC_NAMES = [
    "val_acc", "val_acc_agent", "train_loss", "loss_cls_vit", "loss_cls_agent", "lr",
    "hint_weight", "epoch_seconds", "images_per_second", "loss_kd", "loss_hint", "grad_norm",
]  # fmt: skip
_MODE_GAIN = {"vit": 0.0, "agent": 0.04, "shared": 0.06, "joint": 0.065}  # paper: agents help most
_MODE_COST = {"vit": 1.0, "agent": 1.3, "shared": 1.6, "joint": 2.1}  # seconds per epoch, relative
_OTHER_GAIN, _OTHER_COST = 0.05, 1.5  # any other registered mode: between vit and the agents
_STUDY_START = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
_GRACE, _REDUCTION_FACTOR = 1, 3  # the synthetic ASHA's


def _plan(
    space: str,
    preset: str,
    epochs: int,
    arm_values: Mapping[str, Any],
    trials_per_arm: int = 1,
    final_seeds: int = 0,
    grace: int = _GRACE,
    reduction_factor: float = _REDUCTION_FACTOR,
) -> StudyConfig:
    """The study plan of a synthetic study: the preset's grid, or `arm_values` per factor."""
    return StudyConfig(
        space=space,
        name="synthetic",  # the plan's facts do not depend on it; the study keeps its own name
        preset=preset,
        epochs=epochs,
        grace_epochs=min(grace, epochs),
        reduction_factor=reduction_factor,
        trials_per_arm=max(trials_per_arm, 1),
        # a space with nothing to search runs only final seeds: its plan needs at least one
        final_seeds=final_seeds if final_seeds or get_space(space).search else None,
        arm_values=dict(arm_values),
    )


def write_study(
    url: str,
    name: str,
    trials: list[dict[str, Any]],
    *,
    space: str = "data_fraction",
    preset: str = "cpu",
    config: dict[str, Any] | None = None,
    distributions: dict[str, optuna.distributions.BaseDistribution] | None = None,
    provenance: dict[str, Any] | None = None,
) -> None:
    """Write one finished study: its row, its trials with their metrics, per-arm Optuna studies.

    Each trial is a dict with `arm_json` (factors), `phase`, `status`, `params`, `seed`,
    `final_val_acc`, `test_acc`, `trial_seconds`, and optionally `curves` ({metric name:
    per-epoch values}), `test_acc_agent`, `error`, `optuna_params` (Optuna's labels when they are
    not the values). Search-phase trials also go into the arm's Optuna study. The study is planned
    by `space` over the factor values the trials use; `config` overrides the stored config
    (``epochs``, ``grace_epochs``, ``reduction_factor``, ...) and the plan's budget with it.
    """
    overrides = dict(config or {})
    factors = list(get_space(space).arms)
    arm_values: dict[str, list] = {f: [] for f in factors}
    for t in trials:
        for f in factors:  # a designed cell may name only some factors (paper_table4's vit)
            if f in t["arm_json"] and t["arm_json"][f] not in arm_values[f]:
                arm_values[f].append(t["arm_json"][f])
    plan = _plan(
        space,
        preset,
        epochs=overrides.get("epochs", max([len(_val_curve(t)) for t in trials] + [1])),
        arm_values=arm_values,
        grace=overrides.get("grace_epochs", _GRACE),
        reduction_factor=overrides.get("reduction_factor", _REDUCTION_FACTOR),
    )
    if distributions is None:
        distributions = {d.name: d.optuna() for d in plan.search_space.search}
    provenance = dict(provenance or {})
    command = provenance.pop("command", f"python run_study.py --space {space}")
    provenance = {
        "code_version": "synthetic-0000000",
        "package_versions": {"optuna": optuna.__version__},
        "hardware": {"cpu": "synthetic", "cores": 2},
        **provenance,
    }
    arms = {t_arm: None for t_arm in (_arm_name(t["arm_json"], factors) for t in trials)}
    storage = optuna_storage(url)  # creates Optuna's schema; its studies through its own API
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        for arm in arms:
            storage.create_new_study([optuna.study.StudyDirection.MAXIMIZE], f"{name}/{arm}")
    finally:
        optuna.logging.set_verbosity(verbosity)
        storage.engine.dispose()
    with Store(url) as store:
        study = store.create_study(
            name,
            space=space,
            dataset="fashion_mnist",
            preset=preset,
            command=command,
            config={**plan.report_config(), "name": name, **overrides},
            provenance=provenance,
            **plan.facts(),
        )
        store.import_trials(study, _imported(name, trials, factors, distributions))
        store.set_study_status(name, StudyStatus.FINISHED)


def _arm_name(factors: Mapping[str, Any], order: list[str]) -> str:
    return ",".join(f"{k}={factors[k]}" for k in order if k in factors)


def _val_curve(trial: Mapping[str, Any]) -> list[float]:
    return list(trial.get("curves", {}).get("val_acc", []))


def _imported(name, trials, factors, distributions) -> list[ImportedTrial]:
    out, clock = [], _STUDY_START
    for t in trials:
        arm = _arm_name(t["arm_json"], factors)
        params = dict(t.get("params", {}))
        seconds = float(t.get("trial_seconds", 0.0))
        started, clock = clock, clock + dt.timedelta(seconds=seconds / 4)  # ~4 trials at once
        config = {**t["arm_json"], **params, "seed": t.get("seed", 0)}
        config_json = json.dumps(config, sort_keys=True, default=str)
        search = t["phase"] == Phase.SEARCH
        out.append(
            ImportedTrial(
                arm=arm,
                arm_factors=t["arm_json"],
                phase=t["phase"],
                status=t["status"],
                params=params,
                config=config,
                config_hash=hashlib.sha1(config_json.encode()).hexdigest()[:16],
                seed=t.get("seed", 0),
                started_at=started,
                finished_at=started + dt.timedelta(seconds=seconds),
                curves={k: [float(v) for v in values] for k, values in t.get("curves", {}).items()},
                final_val_acc=t.get("final_val_acc"),
                test_acc=t.get("test_acc"),
                test_acc_agent=t.get("test_acc_agent"),
                trial_seconds=seconds,
                result={},
                error=t.get("error"),
                optuna_study_name=f"{name}/{arm}" if search else None,
                optuna_params=t.get("optuna_params", params) if search else {},
                distributions=distributions if search else {},
            )
        )
    return out


class _RandomTrial:
    """Stands in for an `optuna.Trial` in `SearchSpace.sample`: uniform draws (log-uniform where
    the distribution is log), remembering each label and where in its range it fell (0..1)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.params: dict[str, Any] = {}  # Optuna's labels
        self.position: dict[str, float] = {}

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        u = float(self.rng.uniform())
        lo, hi = (math.log(low), math.log(high)) if log else (low, high)
        x = lo + u * (hi - lo)
        value = min(max(float(f"{math.exp(x) if log else x:.4g}"), low), high)
        return self._keep(name, value, u)

    def suggest_int(self, name: str, low: int, high: int, log: bool = False) -> int:
        value = round(self.suggest_float(name, low, high, log))
        return self._keep(name, value, self.position[name])

    def suggest_categorical(self, name: str, choices: list) -> Any:
        k = int(self.rng.integers(len(choices)))
        return self._keep(name, choices[k], k / max(len(choices) - 1, 1))

    def _keep(self, name: str, value: Any, position: float) -> Any:
        self.params[name], self.position[name] = value, position
        return value


def _penalty(trial: _RandomTrial, categorical: set[str]) -> float:
    """The quality lost by a configuration: 0 at each parameter's sweet spot; the first parameter
    matters most, so importance has an answer."""
    penalty = 0.0
    for i, (name, u) in enumerate(trial.position.items()):
        weight = 0.08 / (i + 1)
        penalty += weight * (u if name in categorical else 4 * (u - 0.6) ** 2)
    return penalty


def _curves(rng, mode: str, quality: float, epochs: int, metrics: int) -> dict[str, np.ndarray]:
    e = np.arange(1, epochs + 1)
    tau = max(epochs / 5, 1.0)
    rise = 1 - np.exp(-e / tau)
    val = np.clip(quality * rise + rng.normal(0, 0.004, epochs), 0, 1)
    loss = 2.3 * np.exp(-e / tau) + 0.2 + rng.normal(0, 0.01, epochs)
    series = {
        "val_acc": val,
        "val_acc_agent": np.clip(val + 0.02 + rng.normal(0, 0.004, epochs), 0, 1),
        "train_loss": loss,
        "loss_cls_vit": loss * 0.6,
        "loss_cls_agent": loss * 0.5,
        "lr": 1e-3 * 0.5 * (1 + np.cos(np.pi * (e - 1) / epochs)),
        "hint_weight": 5.0 * (1 - (e - 1) / epochs),
        "epoch_seconds": 30 * _MODE_COST.get(mode, _OTHER_COST) + rng.normal(0, 0.5, epochs),
        "images_per_second": 2000 / _MODE_COST.get(mode, _OTHER_COST) + rng.normal(0, 5, epochs),
        "loss_kd": loss * 0.1,
        "loss_hint": loss * 0.05,
        "grad_norm": 1 + rng.normal(0, 0.05, epochs),
    }
    names = [n for n in METRIC_NAMES if not (mode == "vit" and "agent" in n)][:metrics]
    return {n: np.round(series[n], 6) for n in names}


def make_synthetic_study(
    url: str,
    name: str,
    n_trials: int,
    epochs: int,
    metrics: int = 8,
    space: str = "data_fraction",
    seed: int = 0,
    *,
    final_seeds: int = 3,
    pruning: bool = True,
    failure_rate: float = 0.01,
    preset: str = "cpu",
    arm_values: Mapping[str, Any] | None = None,
) -> None:
    """Simulate a whole study (search with ASHA, then a seeded final phase) and write it to `url`.

    `n_trials` search trials are spread over the arms of `space` (the `preset`'s grid, or
    `arm_values` per factor); each arm's best configuration is re-run with `final_seeds` seeds and
    evaluated on test. With `pruning=False` every search trial runs all `epochs` (the worst case
    for the size of the metrics table).
    """
    arms = _plan(space, preset, epochs, arm_values or {}).arms()
    trials_per_arm = math.ceil(n_trials / len(arms))
    plan = _plan(space, preset, epochs, arm_values or {}, trials_per_arm, final_seeds)
    search_space = plan.search_space
    categorical = {d.name for d in search_space.search if not hasattr(d, "low")}
    fixed_mode = search_space.fixed.get("mode", "shared")
    rng = np.random.default_rng(seed)
    rungs = plan.rungs() if pruning else []
    trials: list[dict[str, Any]] = []
    best: dict[int, tuple[float, dict]] = {}
    recorded: dict[tuple[int, int], list[float]] = {}
    for i in range(n_trials):
        a = i % len(arms)
        factors = arms[a].factors
        mode = factors.get("mode", fixed_mode)
        fraction = float(factors.get("data_fraction", 1.0))
        drawn = _RandomTrial(rng)
        params = search_space.sample(drawn)
        params = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
        quality = 0.62 + 0.28 * fraction**0.35 + _MODE_GAIN.get(mode, _OTHER_GAIN) * (2 - fraction)
        quality -= _penalty(drawn, categorical)
        quality = float(np.clip(quality + rng.normal(0, 0.01), 0.05, 0.99))
        curves = _curves(rng, mode, quality, epochs, metrics)
        status, stop = TrialStatus.COMPLETE, epochs
        for r in rungs:
            seen = recorded.setdefault((a, r), [])
            value = float(curves["val_acc"][r - 1])
            seen.append(value)
            rf = plan.reduction_factor
            if len(seen) > rf and value < np.quantile(seen, 1 - 1 / rf):
                status, stop = TrialStatus.PRUNED, r
                break
        error = None
        if rng.uniform() < failure_rate:
            status, stop = TrialStatus.FAILED, int(rng.integers(1, stop + 1))
            error = f"NonFiniteLoss: non-finite loss at epoch {stop}, step 12 (loss=nan)"
        curves = {k: v[:stop] for k, v in curves.items()}
        trials.append(
            {
                "arm_json": factors, "phase": Phase.SEARCH, "status": status, "params": params,
                "optuna_params": dict(drawn.params), "seed": 0,
                "final_val_acc": float(curves["val_acc"][-1]), "test_acc": None,
                "trial_seconds": float(curves.get("epoch_seconds", np.full(stop, 30.0)).sum()),
                "curves": curves, "error": error,
            }
        )  # fmt: skip
        if status == TrialStatus.COMPLETE and quality > best.get(a, (-1.0,))[0]:
            best[a] = (quality, params)
    for a, (quality, params) in sorted(best.items()):
        mode = arms[a].factors.get("mode", fixed_mode)
        cost = _MODE_COST.get(mode, _OTHER_COST)
        for s in range(1, final_seeds + 1):
            q = float(np.clip(quality - 0.01 + rng.normal(0, 0.006), 0.05, 0.99))
            curves = _curves(rng, mode, q, epochs, metrics)
            test = float(np.clip(q + rng.normal(0, 0.004), 0, 1))
            trials.append(
                {
                    "arm_json": arms[a].factors, "phase": Phase.FINAL,
                    "status": TrialStatus.COMPLETE, "params": params, "seed": s,
                    "final_val_acc": float(curves["val_acc"][-1]), "test_acc": test,
                    "test_acc_agent": None if mode == "vit" else test + 0.01,
                    "trial_seconds": float(epochs * 30 * cost), "curves": curves,
                }
            )  # fmt: skip
    config = {
        "epochs": epochs,
        "grace_epochs": plan.grace_epochs,
        "reduction_factor": plan.reduction_factor,
        "trials_per_arm": plan.trials_per_arm,
        "final_seeds": final_seeds,
    }
    write_study(url, name, trials, space=space, preset=preset, config=config)
