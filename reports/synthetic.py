"""Synthetic studies for tests and benchmarks: bootstudy's tables and the matching Optuna studies.

Writes with bulk inserts (thousands of trials in seconds): bootstudy's `bootstudy_*` tables and, for
every arm, an Optuna study `<study>/<arm>` whose trials, params, values and intermediate values are
inserted straight into Optuna's RDB schema (optuna/storages/_rdb/models.py), so that
`optuna.load_study(...)` sees exactly the same trials as the report.

    >>> url = "sqlite:///runs/bench/demo.db"
    >>> make_synthetic_study(url, "demo", n_trials=200, epochs=20)  # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import optuna
import sqlalchemy as sa
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    distribution_to_json,
)
from optuna.study import StudyDirection

from study.engine import make_engine, optuna_storage
from study.store import Store

__all__ = ["SPACES", "arm_name", "make_synthetic_study", "write_study"]

# Each space: the factors that make an arm and the distributions TPE searches inside each arm.
SPACES: dict[str, dict[str, Any]] = {
    "data_fraction": {
        "factors": {"mode": ["vit", "agent", "shared", "joint"], "data_fraction": [0.1, 0.25, 1.0]},
        "params": {
            "lr": FloatDistribution(1e-4, 3e-3, log=True),
            "weight_decay": FloatDistribution(1e-3, 0.3, log=True),
        },
    },
    "loss_weights": {
        "factors": {"mode": ["vit", "shared", "joint"]},
        "params": {
            "kd_weight": FloatDistribution(0.0, 2.0),
            "hint_weight": FloatDistribution(0.1, 20.0, log=True),
            "cls_weight": FloatDistribution(0.25, 1.0),
        },
    },
    "agent_design": {
        "factors": {"mode": ["vit", "shared", "joint"]},
        "params": {
            "agent_stem": CategoricalDistribution(["vit_like", "resnet_like"]),
            "agent_norm": CategoricalDistribution(["pre", "post"]),
            "pool_blocks": IntDistribution(0, 3),
        },
    },
    "optimizer": {
        "factors": {"mode": ["vit", "shared"]},
        "params": {
            "lr": FloatDistribution(1e-4, 3e-3, log=True),
            "weight_decay": FloatDistribution(1e-3, 0.3, log=True),
            "warmup_epochs": IntDistribution(0, 10),
            "batch_size": CategoricalDistribution([64, 128, 256]),
        },
    },
}

# Metric names in the order they are logged; vit mode has no agent, so it skips the agent ones.
METRIC_NAMES = [
    "val_acc", "val_acc_agent", "train_loss", "loss_cls_vit", "loss_cls_agent", "lr",
    "hint_weight", "epoch_seconds", "images_per_second", "loss_kd", "loss_hint", "grad_norm",
]  # fmt: skip
_MODE_GAIN = {"vit": 0.0, "agent": 0.04, "shared": 0.06, "joint": 0.065}  # paper: agents help most
_MODE_COST = {"vit": 1.0, "agent": 1.3, "shared": 1.6, "joint": 2.1}  # seconds per epoch, relative
_STUDY_START = dt.datetime(2025, 1, 1)


def arm_name(factors: dict[str, Any]) -> str:
    """`{"mode": "shared", "data_fraction": 0.1}` -> `"mode=shared,data_fraction=0.1"`."""
    return ",".join(f"{k}={v}" for k, v in factors.items())


def _bulk_insert(conn: sa.Connection, table: str, columns: Sequence[str], rows: list) -> None:
    """executemany with the driver's own paramstyle: ~1M rows/s on SQLite, no per-row ORM."""
    if not rows:
        return
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
    conn.exec_driver_sql(sql, rows)


def _ts(conn: sa.Connection, when: dt.datetime):
    """A naive-UTC time as the driver wants it: SQLAlchemy's text format on SQLite."""
    if conn.dialect.name == "sqlite":
        return when.strftime("%Y-%m-%d %H:%M:%S.%f")
    return when.replace(tzinfo=dt.timezone.utc)


def _next_id(conn: sa.Connection, table: str, column: str) -> int:
    return int(conn.exec_driver_sql(f"SELECT COALESCE(MAX({column}), 0) FROM {table}").scalar()) + 1


def write_study(
    url: str,
    name: str,
    trials: list[dict[str, Any]],
    *,
    space: str = "data_fraction",
    config: dict[str, Any] | None = None,
    distributions: dict[str, BaseDistribution] | None = None,
    provenance: dict[str, Any] | None = None,
) -> None:
    """Write one study: a `bootstudy_studies` row, its trials, metrics and per-arm Optuna studies.

    Each trial is a dict with `arm_json` (factors), `phase`, `status`, `params`, `seed`,
    `epochs_run`, `best_val_acc`, `final_val_acc`, `test_acc`, `trial_seconds`, and optionally
    `curves` ({metric name: per-epoch values}), `test_acc_agent`, `error`. Search-phase trials also
    go into Optuna's tables (state COMPLETE/PRUNED/FAIL, value = final_val_acc).
    """
    factors = list(config["arm_factors"]) if config else list(SPACES[space]["factors"])
    config = {
        "space": space,
        "dataset": "fashion_mnist",
        "preset": "tiny",
        "epochs": max([t["epochs_run"] for t in trials] + [1]),
        "grace_epochs": 1,
        "reduction_factor": 3,
        "trials_per_arm": 0,
        "baseline_arm": None,
        "arm_factors": factors,
        "objective": "val_acc",
        **(config or {}),
    }
    distributions = distributions or SPACES.get(space, {}).get("params", {})
    provenance = provenance or {}
    Store.open(url).close()  # creates (migrates) bootstudy's tables
    storage = optuna_storage(url)  # creates Optuna's schema and version rows
    engine = make_engine(url)
    arms: dict[str, dict[str, Any]] = {}
    for t in trials:
        arms.setdefault(arm_name({k: t["arm_json"][k] for k in factors}), t["arm_json"])
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        optuna_ids = {
            arm: storage.create_new_study([StudyDirection.MAXIMIZE], f"{name}/{arm}")
            for arm in arms
        }
    finally:
        optuna.logging.set_verbosity(verbosity)
    storage.engine.dispose()
    with engine.begin() as conn:
        study_id = _next_id(conn, "bootstudy_studies", "id")
        _bulk_insert(
            conn,
            "bootstudy_studies",
            ["id", "name", "space", "dataset", "preset", "command", "config_json", "status"]
            + ["created_at", "finished_at", "code_version", "package_versions", "hardware"],
            [
                (
                    study_id, name, space, config["dataset"], config["preset"],
                    provenance.get("command", f"python run_study.py --space {space}"),
                    json.dumps(config), "FINISHED", _ts(conn, _STUDY_START),
                    _ts(conn, _STUDY_START + dt.timedelta(days=1)),
                    provenance.get("code_version", "synthetic-0000000"),
                    json.dumps(provenance.get("package_versions", {"optuna": optuna.__version__})),
                    json.dumps(provenance.get("hardware", {"cpu": "synthetic", "cores": 2})),
                )
            ],
        )  # fmt: skip
        _write_trials(conn, study_id, name, trials, factors, distributions, optuna_ids)
    engine.dispose()


def _write_trials(conn, study_id, name, trials, factors, distributions, optuna_ids) -> None:
    first_id = _next_id(conn, "bootstudy_trials", "id")
    first_optuna_id = _next_id(conn, "trials", "trial_id")
    numbers: dict[str, int] = {}
    rows, metric_rows = [], []
    o_trials, o_params, o_values, o_inter = [], [], [], []
    clock = _STUDY_START
    for i, t in enumerate(trials):
        tid = first_id + i
        arm = arm_name({k: t["arm_json"][k] for k in factors})
        params = t.get("params", {})
        seconds = float(t.get("trial_seconds", 0.0))
        started, clock = clock, clock + dt.timedelta(seconds=seconds / 4)  # ~4 trials at once
        finished = started + dt.timedelta(seconds=seconds)
        trial_config = {**t["arm_json"], **params, "seed": t.get("seed", 0)}
        config_json = json.dumps(trial_config, sort_keys=True)
        optuna_tid = study_name = None
        if t["phase"] == "search":
            study_name = f"{name}/{arm}"
            optuna_number = numbers.setdefault(arm, 0)
            numbers[arm] += 1
            optuna_tid = first_optuna_id + len(o_trials)
            state = {"COMPLETE": "COMPLETE", "PRUNED": "PRUNED"}.get(t["status"], "FAIL")
            o_trials.append((optuna_tid, optuna_number, optuna_ids[arm], state,
                             _ts(conn, started), _ts(conn, finished)))  # fmt: skip
            for p, v in params.items():
                d = distributions[p]
                o_params.append((optuna_tid, p, d.to_internal_repr(v), distribution_to_json(d)))
            if state == "COMPLETE" and t.get("final_val_acc") is not None:
                o_values.append((optuna_tid, 0, float(t["final_val_acc"]), "FINITE"))
            for step, v in enumerate(t.get("curves", {}).get("val_acc", []), start=1):
                o_inter.append((optuna_tid, step, float(v), "FINITE"))
        rows.append(
            (
                tid, study_id, arm, json.dumps(t["arm_json"]), i, study_name, optuna_tid,
                f"ray_{tid:08x}", t["phase"], t["status"], json.dumps(params), config_json,
                hashlib.sha1(config_json.encode()).hexdigest()[:16], t.get("seed", 0),
                t.get("epochs_run"), t.get("best_val_acc"), t.get("final_val_acc"),
                t.get("test_acc"), t.get("test_acc_agent"), json.dumps({}), seconds,
                t.get("error"), None, _ts(conn, started), _ts(conn, finished),
            )
        )  # fmt: skip
        for metric, values in t.get("curves", {}).items():
            metric_rows.extend((tid, e + 1, metric, float(v)) for e, v in enumerate(values))
    _bulk_insert(
        conn,
        "bootstudy_trials",
        ["id", "study_id", "arm", "arm_json", "number", "optuna_study_name", "optuna_trial_id"]
        + ["ray_trial_id", "phase", "status", "params_json", "config_json", "config_hash", "seed"]
        + ["epochs_run", "best_val_acc", "final_val_acc", "test_acc", "test_acc_agent"]
        + ["result_json", "trial_seconds", "error", "reused_from", "started_at", "finished_at"],
        rows,
    )
    _bulk_insert(
        conn, "bootstudy_trial_metrics", ["trial_id", "epoch", "name", "value"], metric_rows
    )
    _bulk_insert(
        conn,
        "trials",
        ["trial_id", "number", "study_id", "state", "datetime_start", "datetime_complete"],
        o_trials,
    )
    _bulk_insert(
        conn,
        "trial_params",
        ["trial_id", "param_name", "param_value", "distribution_json"],
        o_params,
    )
    _bulk_insert(conn, "trial_values", ["trial_id", "objective", "value", "value_type"], o_values)
    _bulk_insert(
        conn,
        "trial_intermediate_values",
        ["trial_id", "step", "intermediate_value", "intermediate_value_type"],
        o_inter,
    )


def _sample_params(rng: np.random.Generator, distributions: dict[str, BaseDistribution]):
    """One random configuration and its quality penalty (0 at each parameter's sweet spot)."""
    params, penalty = {}, 0.0
    for i, (p, d) in enumerate(distributions.items()):
        weight = 0.08 / (i + 1)  # the first parameter matters most, so importance has an answer
        if isinstance(d, CategoricalDistribution):
            k = int(rng.integers(len(d.choices)))
            params[p] = d.choices[k]
            penalty += weight * k / max(len(d.choices) - 1, 1)
            continue
        lo, hi = (math.log(d.low), math.log(d.high)) if d.log else (d.low, d.high)
        u = rng.uniform()
        x = lo + u * (hi - lo)
        x = math.exp(x) if d.log else x
        if isinstance(d, IntDistribution):
            x = int(round(x))
        else:
            x = float(f"{x:.4g}")
        params[p] = x
        penalty += weight * 4 * (u - 0.6) ** 2
    return params, penalty


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
        "epoch_seconds": 30 * _MODE_COST[mode] + rng.normal(0, 0.5, epochs),
        "images_per_second": 2000 / _MODE_COST[mode] + rng.normal(0, 5, epochs),
        "loss_kd": loss * 0.1,
        "loss_hint": loss * 0.05,
        "grad_norm": 1 + rng.normal(0, 0.05, epochs),
    }
    names = [n for n in METRIC_NAMES if not (mode == "vit" and "agent" in n)][:metrics]
    return {n: np.round(series[n], 6) for n in names}


def _rungs(grace: int, rf: int, max_t: int) -> list[int]:
    out, r = [], grace
    while r < max_t:
        out.append(r)
        r *= rf
    return out


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
) -> None:
    """Simulate a whole study (search with ASHA, then a seeded final phase) and write it to `url`.

    `n_trials` search trials are spread over the space's arms; each arm's best configuration is
    re-run with `final_seeds` seeds and evaluated on test. With `pruning=False` every search trial
    runs all `epochs` (the worst case for the size of the metrics table).
    """
    if space not in SPACES:
        raise ValueError(f"unknown space {space!r}; known: {sorted(SPACES)}")
    rng = np.random.default_rng(seed)
    spec = SPACES[space]
    grace, rf = 1, 3
    rungs = _rungs(grace, rf, epochs) if pruning else []
    arms = [
        dict(zip(spec["factors"], values, strict=True))
        for values in _product(spec["factors"].values())
    ]
    trials: list[dict[str, Any]] = []
    best: dict[int, tuple[float, dict, float]] = {}
    recorded: dict[tuple[int, int], list[float]] = {}
    for i in range(n_trials):
        a = i % len(arms)
        factors = arms[a]
        mode = factors.get("mode", "shared")
        fraction = float(factors.get("data_fraction", 1.0))
        params, penalty = _sample_params(rng, spec["params"])
        quality = 0.62 + 0.28 * fraction**0.35 + _MODE_GAIN[mode] * (2 - fraction) - penalty
        quality = float(np.clip(quality + rng.normal(0, 0.01), 0.05, 0.99))
        curves = _curves(rng, mode, quality, epochs, metrics)
        status, stop = "COMPLETE", epochs
        for r in rungs:
            seen = recorded.setdefault((a, r), [])
            value = float(curves["val_acc"][r - 1])
            seen.append(value)
            if len(seen) > rf and value < np.quantile(seen, 1 - 1 / rf):
                status, stop = "PRUNED", r
                break
        error = None
        if rng.uniform() < failure_rate:
            status, stop = "FAILED", int(rng.integers(1, stop + 1))
            error = f"NonFiniteLoss: non-finite loss at epoch {stop}, step 12 (loss=nan)"
        curves = {k: v[:stop] for k, v in curves.items()}
        val = curves["val_acc"]
        trials.append(
            {
                "arm_json": factors, "phase": "search", "status": status, "params": params,
                "seed": 0, "epochs_run": stop, "best_val_acc": float(val.max()),
                "final_val_acc": float(val[-1]), "test_acc": None,
                "trial_seconds": float(curves.get("epoch_seconds", np.full(stop, 30.0)).sum()),
                "curves": curves, "error": error,
            }
        )  # fmt: skip
        if status == "COMPLETE" and quality > best.get(a, (-1.0,))[0]:
            best[a] = (quality, params, float(val[-1]))
    for a, (quality, params, _) in sorted(best.items()):
        mode = arms[a].get("mode", "shared")
        for s in range(1, final_seeds + 1):
            q = float(np.clip(quality - 0.01 + rng.normal(0, 0.006), 0.05, 0.99))
            curves = _curves(rng, mode, q, epochs, metrics)
            test = float(np.clip(q + rng.normal(0, 0.004), 0, 1))
            trials.append(
                {
                    "arm_json": arms[a], "phase": "final", "status": "COMPLETE",
                    "params": params, "seed": s, "epochs_run": epochs,
                    "best_val_acc": float(curves["val_acc"].max()),
                    "final_val_acc": float(curves["val_acc"][-1]), "test_acc": test,
                    "test_acc_agent": None if mode == "vit" else test + 0.01,
                    "trial_seconds": float(epochs * 30 * _MODE_COST[mode]), "curves": curves,
                }
            )  # fmt: skip
    config = {
        "epochs": epochs,
        "grace_epochs": grace,
        "reduction_factor": rf,
        "trials_per_arm": math.ceil(n_trials / len(arms)),
        "arm_factors": list(spec["factors"]),
        "baseline_arm": None,
    }
    write_study(url, name, trials, space=space, config=config, distributions=spec["params"])


def _product(lists: Iterable[Sequence[Any]]) -> list[tuple]:
    out: list[tuple] = [()]
    for values in lists:
        out = [prefix + (v,) for prefix in out for v in values]
    return out
