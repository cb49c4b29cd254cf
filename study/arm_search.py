"""Per-arm search: each arm has its own Optuna study (TPE), its own share of the budget.

One global TPE would spend the budget on the best cell and starve the rest; here every arm gets
`trials_per_arm` trials, asked round-robin, from a sampler that only ever sees that arm's trials.

An ASHA-stopped trial ends PRUNED in Optuna (with every epoch's value as an intermediate value), not
COMPLETE with its early low-fidelity value, which is what Ray's own OptunaSearch does
(ray-project/ray#5651, #15283) and which makes TPE compare epoch-1 and epoch-E accuracies as alike.

Plain Python: no Ray here. `study.ray_tune` adapts it to Ray's Searcher interface.
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import optuna
import pandas as pd
from optuna.trial import TrialState

from search_spaces import Arm
from study.engine import reconnecting
from study.optuna_schema import (
    TRIAL_ID_ATTR,  # re-exported: the link our trials' Optuna twins carry
)
from study.plan import StudyConfig
from study.status import TERMINAL, Phase, TrialStatus
from study.store import STALE_ERROR, Store, StudyRecord
from trainers.config import config_hash

optuna.logging.set_verbosity(optuna.logging.WARNING)  # the live view reports trials, not Optuna
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

__all__ = ["ArmSearch", "TrialSpec", "HASH_EXCLUDED", "TRIAL_ID_ATTR", "TRIAL_NUMBER_ATTR",
           "link_report"]  # fmt: skip

# Fields that do not change what a trial computes: left out of the dedup hash.
HASH_EXCLUDED = ("data_dir", "device", "eval_batch_size", "compile")
# The study's trial number on its Optuna twin: the name the terminal, the report and Ray's trial
# directory use (Optuna numbers each arm's trials from 0 again, so its own number differs).
TRIAL_NUMBER_ATTR = "bootstudy_trial"
REPORT_ATTR = "bootstudy_report"  # the report's file, once run_study.py has written it


@dataclass
class TrialSpec:
    """One trial, as the driver hands it to the scheduler (JSON-ready via `as_config`)."""

    number: int
    arm: Arm
    phase: Phase
    params: dict[str, Any]
    train: dict[str, Any]  # resolved TrainConfig
    config_hash: str
    optuna_trial: optuna.Trial | None = field(default=None, repr=False)
    reported: dict[int, float] = field(default_factory=dict, repr=False)  # told to Optuna

    def as_config(self) -> dict[str, Any]:
        return {
            "train": self.train,
            "meta": {
                "number": self.number,
                "arm": self.arm.name,
                "arm_factors": self.arm.factors,
                "phase": str(self.phase),
                "params": self.params,
                "config_hash": self.config_hash,
                "optuna_trial_id": self.optuna_trial._trial_id if self.optuna_trial else None,
            },
        }


class ArmSearch:
    """Asks each arm's Optuna study for configurations and tells it how they ended."""

    def __init__(
        self,
        config: StudyConfig,
        store: Store,
        study: StudyRecord,
        storage: optuna.storages.BaseStorage,
        code_version: str,
    ):
        self.config, self.store, self.study = config, store, study
        self.code_version = code_version
        self.space = config.search_space
        self.arms = config.arms()
        self.studies: dict[str, optuna.Study] = {}
        for index, arm in enumerate(self.arms):
            name = config.optuna_study_name(arm)
            # A resumed arm must not replay the random start-up suggestions it already tried
            # (they would all be reused as duplicates): the seed moves on with the trial count.
            previous = _trial_count(storage, name)
            sampler = optuna.samplers.TPESampler(
                seed=config.seed * 1000 + index + 7919 * previous,
                multivariate=True,
                group=True,  # conditional (define-by-run) parameters
                constant_liar=True,  # parallel trials don't all get the same suggestion
                n_startup_trials=max(2, min(10, config.trials_per_arm // 3)),
            )
            self.studies[arm.name] = reconnecting(
                optuna.create_study,
                study_name=name,
                storage=storage,
                sampler=sampler,
                direction="maximize",
                load_if_exists=True,
            )
            _label(self.studies[arm.name], config, arm)
        done = _finished(store.trials_frame(study.name), Phase.SEARCH)
        self.assigned = {arm.name: int((done["arm"] == arm.name).sum()) for arm in self.arms}
        self.next_number = store.next_trial_number(study)
        self.pending: dict[int, TrialSpec] = {}
        self.reused = 0
        # Optuna's per-epoch writes (one commit each) run on one background thread, in order, so
        # the driver's event loop never waits on them; `drain` waits for them (end of a phase).
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="optuna-writer")
        self._writes: list[Future] = []

    # --- asking -----------------------------------------------------------------------------------

    def remaining(self) -> int:
        if self.config.searchless:
            return 0
        return sum(self.config.trials_per_arm - n for n in self.assigned.values())

    def next_trial(self) -> TrialSpec | None:
        """The next trial to run, or None when every arm's budget is used up.

        A suggestion identical (by config hash) to a completed trial anywhere in the store is not
        run again: it is recorded REUSED, told to Optuna with the original's values, and skipped.
        """
        while True:
            arm = None if self.config.searchless else self._next_arm()
            if arm is None:
                return None
            self.assigned[arm.name] += 1
            study = self.studies[arm.name]
            # ask and the suggestions are written one by one: a lost connection repeats both
            # (an abandoned ask stays RUNNING in Optuna until the study settles it at its end)
            trial, params = reconnecting(self._ask, study)
            spec = self._spec(arm, Phase.SEARCH, params, seed=self.config.seed, trial=trial)
            if self._reuse(spec):
                continue
            self.pending[spec.number] = spec
            return spec

    def final_trials(self) -> list[TrialSpec]:
        """Each arm's best search configuration re-run with `final_seeds` new seeds, on test.

        (arm, seed) pairs the study already has (a resumed study) are not run again; stale ones
        (their driver died) are.
        """
        final = _finished(self.store.trials_frame(self.study.name), Phase.FINAL)
        done = set(zip(final["arm"], final["seed"], strict=True))
        specs = []
        for arm in self.arms:
            best = self.best_params(arm)
            if best is None:
                continue
            for i in range(self.config.final_seeds):
                seed = self.config.seed + 1000 + i
                if (arm.name, seed) in done:
                    continue
                spec = self._spec(arm, Phase.FINAL, best, seed=seed)
                if not self._reuse(spec):
                    specs.append(spec)
                    self.pending[spec.number] = spec
        return specs

    def best_params(self, arm: Arm) -> dict[str, Any] | None:
        if self.config.searchless:  # nothing searched: the arm's configuration is fixed
            return {}
        study = self.studies[arm.name]
        completed = reconnecting(study.get_trials, deepcopy=False, states=(TrialState.COMPLETE,))
        if not completed:
            return None
        best = max(completed, key=lambda t: t.value)
        # Optuna keeps categorical labels; map back through the space (e.g. hint_layers "first").
        return self._params_from_labels(best.params)

    def _params_from_labels(self, labels: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for dist in self.space.search:
            if dist.name in labels:
                values = getattr(dist, "values", None)
                out[dist.name] = values[labels[dist.name]] if values else labels[dist.name]
        return out

    def _ask(self, study: optuna.Study) -> tuple[optuna.Trial, dict[str, Any]]:
        trial = study.ask()
        return trial, self.space.sample(trial)

    def _next_arm(self) -> Arm | None:
        open_arms = [a for a in self.arms if self.assigned[a.name] < self.config.trials_per_arm]
        if not open_arms:
            return None
        return min(open_arms, key=lambda a: self.assigned[a.name])  # round-robin, fewest first

    def _spec(self, arm: Arm, phase: Phase, params: dict[str, Any], seed: int, trial=None):
        base = {**self.config.trainer_base(), "seed": seed}
        train = self.space.trial_config(
            self.config.preset, arm, params, base, self.config.trial_overrides(arm)
        ).to_dict()
        hashed = {k: v for k, v in train.items() if k not in HASH_EXCLUDED}
        digest = config_hash(hashed, {"code_version": self.code_version})
        number = self.next_number
        self.next_number += 1
        json_params = {k: list(v) if isinstance(v, tuple) else v for k, v in params.items()}
        return TrialSpec(number, arm, phase, json_params, train, digest, trial)

    def _reuse(self, spec: TrialSpec) -> bool:
        original = self.store.find_completed_by_hash(spec.config_hash)
        if original is None:
            return False
        optuna_id = spec.optuna_trial._trial_id if spec.optuna_trial else None
        reused_id = self.store.record_reused(
            self.study.id,
            original,
            arm=spec.arm.name,
            arm_factors=spec.arm.factors,
            number=spec.number,
            phase=spec.phase,
            params=spec.params,
            optuna_study_name=self.config.optuna_study_name(spec.arm) if optuna_id else None,
            optuna_trial_id=optuna_id,
        )
        if spec.optuna_trial is not None:
            trial = spec.optuna_trial
            _optuna_write(trial.set_user_attr, TRIAL_ID_ATTR, reused_id)
            _optuna_write(trial.set_user_attr, TRIAL_NUMBER_ATTR, spec.number)
            curve = self.store.metric_curve(original.id, self.space.objective)
            for epoch, value in curve:
                _optuna_write(trial.report, value, epoch)
            value = original.final_val_acc
            study = self.studies[spec.arm.name]
            if value is None or not math.isfinite(value):
                _optuna_write(study.tell, trial, state=TrialState.FAIL, skip_if_finished=True)
            else:
                _optuna_write(study.tell, trial, value, skip_if_finished=True)
        self.reused += 1
        return True

    # --- telling ---------------------------------------------------------------------------------

    def on_result(self, number: int, result: dict[str, Any]) -> None:
        spec = self.pending.get(number)
        value = result.get(self.space.objective)
        if spec is None or spec.optuna_trial is None or value is None or "epoch" not in result:
            return
        epoch = int(result["epoch"])
        if math.isfinite(value) and spec.reported.get(epoch) != value:
            # an epoch told again with another value is a retried attempt's (--retries), which
            # replaced the first attempt's in our rows: Optuna's `report` would keep the first
            trial, first = spec.optuna_trial, epoch not in spec.reported
            spec.reported[epoch] = float(value)
            if first:
                self._write(trial.report, float(value), epoch)
            else:
                self._write(
                    trial.storage.set_trial_intermediate_value, trial._trial_id, epoch, float(value)
                )

    def _write(self, fn, *args, **kwargs) -> None:
        self._writes = [f for f in self._writes if not f.done() or f.exception()]
        self._writes.append(self._writer.submit(_optuna_write, fn, *args, **kwargs))

    def drain(self) -> None:
        """Wait for every queued Optuna write; re-raise the first that failed."""
        writes, self._writes = self._writes, []
        for future in writes:
            future.result()

    def on_start(self, number: int, trial_id: int) -> None:
        """The trial runs as our row `trial_id`: say so on its Optuna trial (the dashboard shows
        it as a user attribute, linking the two)."""
        spec = self.pending.get(number)
        if spec is not None and spec.optuna_trial is not None:
            self._write(spec.optuna_trial.set_user_attr, TRIAL_ID_ATTR, trial_id)
            self._write(spec.optuna_trial.set_user_attr, TRIAL_NUMBER_ATTR, number)

    def on_complete(
        self, number: int, last: dict[str, Any] | None, error: bool, interrupted: bool = False
    ) -> TrialStatus:
        """Tell Optuna how the trial ended; return our status.

        COMPLETE (all epochs, a finite objective), FAILED (it raised), INTERRUPTED (stopped by
        Ctrl-C/SIGTERM before its last epoch; FAIL in Optuna, and `--resume` runs it again), or
        PRUNED (stopped early by ASHA).
        """
        if last:  # Ray hands the final result to on_complete only, not to on_result
            self.on_result(number, last)
        spec = self.pending.pop(number, None)
        epochs = int(last["epoch"]) if last and "epoch" in last else 0
        value = last.get(self.space.objective) if last else None
        if error:
            status = TrialStatus.FAILED
        elif epochs >= self.config.epochs and value is not None and math.isfinite(value):
            status = TrialStatus.COMPLETE
        elif interrupted:
            status = TrialStatus.INTERRUPTED
        else:
            status = TrialStatus.PRUNED  # stopped by ASHA before max_t
        if spec is not None and spec.optuna_trial is not None:
            study = self.studies[spec.arm.name]
            if status == TrialStatus.COMPLETE:  # queued after the trial's reports, in order
                self._write(study.tell, spec.optuna_trial, float(value), skip_if_finished=True)
            else:
                state = TrialState.PRUNED if status == TrialStatus.PRUNED else TrialState.FAIL
                self._write(study.tell, spec.optuna_trial, state=state, skip_if_finished=True)
        return status


def _label(study: optuna.Study, config: StudyConfig, arm: Arm) -> None:
    """What optuna-dashboard shows of an arm's study: the objective's name (not "Objective 0"),
    its unit (Optuna keeps fractions; the report shows percent), and which bootstudy study and arm
    it is. Written once: a resumed study finds them set."""
    objective = config.search_space.objective
    if study.metric_names != [objective]:
        reconnecting(study.set_metric_names, [objective])
    attrs = {
        "bootstudy_study": config.name,
        "bootstudy_arm": arm.name,
        "objective": f"{objective} as a fraction: 0.196 here is 19.6% in the report",
    }
    for key, value in attrs.items():
        if study.user_attrs.get(key) != value:
            reconnecting(study.set_user_attr, key, value)


def link_report(config: StudyConfig, storage: optuna.storages.BaseStorage, path: str) -> None:
    """Point every arm's Optuna study at the study's report (a user attribute the dashboard
    shows), once the report is written."""
    for arm in config.arms():
        try:
            study = reconnecting(
                optuna.load_study, study_name=config.optuna_study_name(arm), storage=storage
            )
        except KeyError:  # an arm with no Optuna study: a searchless study has none
            continue
        reconnecting(study.set_user_attr, REPORT_ATTR, str(path))


def _optuna_write(fn, *args, **kwargs):
    """One write to Optuna's tables, repeated while PostgreSQL connections are lost. A repeat
    that finds the trial finished means the first try had landed (its answer was what got lost)."""
    return reconnecting(fn, *args, done_if=(optuna.exceptions.UpdateFinishedTrialError,), **kwargs)


def _finished(frame: pd.DataFrame, phase: Phase) -> pd.DataFrame:
    """The phase's trials that use up its budget: terminal, and not stale (the driver died, so
    resume re-runs them); FAILED ones count too, as a trial that raised would raise again."""
    done = frame[frame["status"].isin(TERMINAL) & (frame["phase"] == phase)]
    return done[~done["error"].fillna("").str.startswith(STALE_ERROR)]


def _trial_count(storage: optuna.storages.BaseStorage, study_name: str) -> int:
    try:
        study_id = reconnecting(storage.get_study_id_from_name, study_name)
    except KeyError:
        return 0
    return reconnecting(storage.get_n_trials, study_id)
