"""Reading one study for its report: `load_study` returns everything the sections share.

Everything is read through the store's query API in a few set-based queries, never one per
trial; per-epoch metrics only for the trials whose curves are drawn. The derived facts (rungs,
baselines, main view) come from the study record, where the study plan stored them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from reports import figures, stats
from search_spaces.order import arm_order
from study.engine import mask_password
from study.status import Phase
from study.store import Store, StudyRecord

__all__ = ["LoadedStudy", "load_study", "TRIAL_COLUMNS", "CURVE_METRICS", "MAX_CURVES"]

# Columns of bootstudy_trials the report uses; config_json and result_json stay in the database.
TRIAL_COLUMNS = (
    "id", "arm", "arm_json", "number", "optuna_study_name", "optuna_trial_id", "phase", "status",
    "params_json", "config_hash", "seed", "epochs_run", "best_val_acc", "final_val_acc",
    "test_acc", "test_acc_agent", "trial_seconds", "error", "reused_from", "started_at",
    "finished_at",
)  # fmt: skip
CURVE_METRICS = ("val_acc", "val_acc_agent")  # what the learning curves draw
MAX_CURVES = 300  # curves drawn; beyond a few hundred lines a plot shows nothing more


@dataclass(frozen=True)
class LoadedStudy:
    """One study as its report sees it; every section is a function of this alone."""

    record: StudyRecord
    trials: pd.DataFrame  # TRIAL_COLUMNS, `factors` and `params` as dicts, in the arms' order,
    #                       and `ssl_seconds` (0 without a self-supervised phase)
    drawn: list[int]  # ids of the trials whose curves are drawn (at most MAX_CURVES)
    curves: pd.DataFrame  # CURVE_METRICS of the drawn trials: trial_id, epoch, name, value
    optuna_trials: pd.DataFrame  # the arms' Optuna trials (Store.optuna_trials_frame)
    storage_url: str  # password masked
    arms: dict[str, dict]  # arm -> factors, in display order (mode order, then numbers)
    colors: dict[str, str]  # arm -> colour, the same in every figure
    results: pd.DataFrame  # the values each arm is judged on (stats.arm_results)
    summaries: dict[str, stats.Summary]
    sources: dict[str, str]  # arm -> "test" | "val"
    comparisons: list[stats.Comparison]  # against the baselines the plan stored
    max_epochs: int
    param_kinds: dict[str, str]  # searched parameter -> "log" | "linear" | "categorical"
    design: str  # what the study ran: "searched" | "ofat" | "factorial" | "cells" (wording)

    @property
    def rungs(self) -> list[int]:
        return list(self.record.rungs)


def load_study(store: Store, name: str) -> LoadedStudy:
    """Read and prepare the study called `name` (a `StorageError` if there is none)."""
    record = store.get_study(name)
    trials = store.trials_frame(name, TRIAL_COLUMNS, parsed=True)
    trials = trials.rename(columns={"arm_factors": "factors"})
    arms: dict[str, dict] = {}
    for arm, factors in zip(trials["arm"], trials["factors"], strict=True):
        arms.setdefault(arm, factors)
    arms = {arm: arms[arm] for arm in arm_order(arms, record.space)}
    trials = trials.assign(arm=pd.Categorical(trials["arm"], categories=list(arms), ordered=True))
    trials = trials.sort_values(["arm", "id"]).assign(arm=lambda d: d["arm"].astype(str))
    # the self-supervised phase's seconds (ssl_init=dino; the same every epoch), shown apart
    ssl = store.metrics_frame(name, names=("ssl_seconds",)).groupby("trial_id")["value"].first()
    trials = trials.assign(ssl_seconds=[float(ssl.get(int(i), 0.0)) for i in trials["id"]])
    results = stats.arm_results(trials)
    summaries = {
        arm: stats.summarize(results.loc[results["arm"] == arm, "value"])
        for arm in arms
        if (results["arm"] == arm).any()
    }
    drawn = figures.select_curves(trials, MAX_CURVES)
    curves = store.metrics_frame(name, trial_ids=drawn, names=CURVE_METRICS)
    optuna_trials = store.optuna_trials_frame(trials["optuna_study_name"].dropna().unique())
    ran = trials["epochs_run"].to_numpy(float)
    epochs = record.config.get("epochs") or np.nanmax(ran, initial=1)
    return LoadedStudy(
        record=record,
        trials=trials,
        drawn=drawn,
        curves=curves,
        optuna_trials=optuna_trials,
        storage_url=mask_password(store.url),
        arms=arms,
        colors=figures.arm_colors(list(arms)),
        results=results,
        summaries=summaries,
        sources=results.groupby("arm")["source"].first().to_dict(),
        comparisons=stats.compare_arms(results, record.baselines),
        max_epochs=int(epochs),
        param_kinds=_param_kinds(trials, optuna_trials),
        design=_design(record, trials),
    )


def _design(record: StudyRecord, trials: pd.DataFrame) -> str:
    from reports.designed import study_design
    from search_spaces import SPACES

    space = SPACES.get(record.space)
    searched = bool((trials["phase"] == Phase.SEARCH).any())
    return study_design(record.config, searched, space is not None and space.cells is not None)


def _param_kinds(trials: pd.DataFrame, optuna_trials: pd.DataFrame) -> dict[str, str]:
    """ "log", "linear" or "categorical" per searched parameter: Optuna's distributions when they
    are stored, else guessed from the values."""
    from optuna.distributions import CategoricalDistribution

    dists = optuna_trials.attrs.get("distributions", {})
    kinds: dict[str, str] = {}
    search = trials[trials["phase"] == Phase.SEARCH]
    for p in dict.fromkeys(k for d in search["params"] for k in d):
        if p in dists:
            d = dists[p]
            kinds[p] = "categorical" if isinstance(d, CategoricalDistribution) else (
                "log" if getattr(d, "log", False) else "linear")  # fmt: skip
            continue
        values = [d.get(p) for d in search["params"] if d.get(p) is not None]
        if values and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            lo, hi = min(values), max(values)
            kinds[p] = "log" if lo > 0 and hi / lo > 20 else "linear"
        else:
            kinds[p] = "categorical"
    return kinds
