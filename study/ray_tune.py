"""The one module that talks to Ray.

Ray Tune's reporting and scheduling APIs have changed several times; everything else in bootstudy
sees plain Python (`ArmSearch`, `Store`, a `train(config, report)` function), so a Ray upgrade is a
change to this file only. What lives here:

- `PerArmASHA`: one ASHA bracket per arm, so a 1%-data trial is never cut against 100%-data trials.
- `ArmSearcher`: Ray's Searcher interface over `ArmSearch` (per-arm Optuna studies).
- `StoreCallback`: the single writer. Trial processes never open the database; the driver writes
  every start, epoch, end and failure through this callback.
- `run_trials`: a Tuner over those, with the dataset put once into Ray's object store.
- `Interrupt`: SIGINT/SIGTERM handling. Ray's own handler is switched off (it ends the run as if
  it had finished, leaving trials RUNNING in our tables); ours stops scheduling, lets running trials
  finish their current epoch, and records the rest INTERRUPTED.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search import Searcher

from study import frozen_code
from study.status import TrialStatus
from study.watchdog import Watchdog, WatchdogSpec, timeout_message
from trainers.config import TrainConfig
from trainers.errors import ConfigError
from trainers.home import trial_weights

if TYPE_CHECKING:  # workers import this module for `_trial`: keep Optuna and SQL out of them
    from study.arm_search import ArmSearch, TrialSpec
    from study.store import Store

__all__ = [
    "Interrupt",
    "PerArmASHA",
    "ArmSearcher",
    "StoreCallback",
    "run_trials",
    "ray_session",
    "INTERRUPT_GRACE_SECONDS",
]

log = logging.getLogger(__name__)

TrainFn = Callable[..., dict[str, Any]]


# --- interrupts ---------------------------------------------------------------------------------

# After the first SIGINT/SIGTERM, running trials get this long to finish their current epoch; the
# rest are then stopped at once and recorded INTERRUPTED. Recording and stopping Ray take a few
# seconds more: the driver exits within 20 s of the signal, below Kubernetes' 30 s grace.
INTERRUPT_GRACE_SECONDS = 8.0


class Interrupt:
    """SIGINT/SIGTERM during a study, as flags the Tune loop polls (a handler only sets them).

    First signal: no trial starts any more; running trials stop after their current epoch (or at
    once, when `grace_seconds` have passed). Second signal: everything stops at once. Either way
    the driver records what happened and exits 130.
    """

    def __init__(self, grace_seconds: float = INTERRUPT_GRACE_SECONDS, out=None):
        self.grace_seconds = grace_seconds
        self.out = out if out is not None else sys.stderr
        self.signal: int | None = None  # the first signal received
        self.hard = False  # a second signal: stop now
        self.stopped: set[str] = set()  # Ray trial ids stopped by the interrupt, not by ASHA
        self._first_at = 0.0
        self._in_tune = False  # inside Tune's loop: a second signal raises there, see `tune_loop`
        self._expired = False  # the grace ran out: `_expire` signalled us once more
        self._timer: threading.Timer | None = None  # ends the grace (see `_handle`)
        self._installed = False  # our handlers are in place: only then may `_expire` signal

    def __getstate__(self) -> dict:  # Ray pickles the scheduler for its own restore
        return {**self.__dict__, "out": None, "_timer": None}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else ""

    def stop_now(self) -> bool:
        return self.hard or (
            self.requested and time.monotonic() - self._first_at > self.grace_seconds
        )

    def _handle(self, signum: int, frame) -> None:
        if self.signal is None:
            self.signal, self._first_at = signum, time.monotonic()
            self._say(
                f"\n{signal.Signals(signum).name}: no new trials; running trials stop after "
                f"their current epoch (at most {self.grace_seconds:.0f} s). "
                "Press Ctrl-C again to stop at once."
            )
            # Tune waits up to 15 s more for trials to end their step once told to stop: at the
            # end of the grace, the same signal again stops everything at once, in the main thread
            self._timer = threading.Timer(self.grace_seconds, self._expire, args=(signum,))
            self._timer.daemon = True
            self._timer.start()
        elif not self.hard:
            self.hard = True
            if self._expired:
                self._say(f"{self.grace_seconds:.0f} s since {self.name}: stopping now")
            else:
                self._say(f"\n{signal.Signals(signum).name} again: stopping now")
            if self._in_tune:
                # Tune's own shutdown waits up to 15 s for trials to end their step: leave its
                # loop now; `run_trials` records the trials and the driver stops Ray.
                raise KeyboardInterrupt

    def _expire(self, signum: int) -> None:
        if self._installed and not self.hard:
            self._expired = True
            os.kill(os.getpid(), signum)

    def _say(self, text: str) -> None:
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except (OSError, ValueError):  # a closed pipe must not turn the interrupt into a crash
            pass

    @contextlib.contextmanager
    def tune_loop(self) -> Iterator[None]:
        """Around Tune's loop: a second signal leaves it at once (as KeyboardInterrupt)."""
        self._in_tune = True
        try:
            yield
        except KeyboardInterrupt:
            if not self.hard:
                raise
        finally:
            self._in_tune = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupt]:
        """Handle SIGINT and SIGTERM while the block runs (main thread only; a no-op elsewhere)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        self._installed = True
        try:
            yield self
        finally:
            self._installed = False
            if self._timer is not None:
                self._timer.cancel()
            for signum, handler in previous.items():
                signal.signal(signum, handler)


class _InterruptStopper(tune.Stopper):
    """Tune's side of `Interrupt`: stops each trial at its next result, then the whole run."""

    def __init__(self, interrupt: Interrupt, running: Callable[[], int]):
        self.interrupt, self.running = interrupt, running

    def __getstate__(self) -> dict:  # see ArmSearcher.__getstate__
        return {}

    def __call__(self, trial_id: str, result: dict) -> bool:
        if not self.interrupt.requested:
            return False
        self.interrupt.stopped.add(trial_id)  # its epoch is in; the searcher records INTERRUPTED
        return True

    def stop_all(self) -> bool:
        # Pending trials never start (`_Interruptible`), so once no trial runs, the run is over.
        return self.interrupt.stop_now() or (self.interrupt.requested and not self.running())


# --- scheduling ---------------------------------------------------------------------------------


def _arm_of(trial) -> str:
    return trial.config["meta"]["arm"]


class _Interruptible(FIFOScheduler):
    """FIFO that starts no trial once an interrupt was requested."""

    interrupt: Interrupt | None = None  # set by `run_trials`

    def choose_trial_to_run(self, tune_controller):
        if self.interrupt is not None and self.interrupt.requested:
            return None
        return super().choose_trial_to_run(tune_controller)


class PerArmASHA(_Interruptible):
    """ASHA with separate rungs per arm: trials are compared only with trials of their own arm.

    `history` pre-fills each arm's rungs with the values earlier trials of that arm reached at each
    milestone (a resumed study keeps its cut-offs instead of starting from empty rungs).
    """

    def __init__(
        self,
        metric: str,
        max_t: int,
        grace_period: int,
        reduction_factor: float,
        time_attr: str = "epoch",
        history: dict[str, list[dict[int, float]]] | None = None,
    ):
        super().__init__()
        self._metric, self._mode = metric, "max"
        self._options = dict(
            time_attr=time_attr,
            metric=metric,
            mode="max",
            max_t=max_t,
            grace_period=grace_period,
            reduction_factor=reduction_factor,
        )
        self.arms: dict[str, AsyncHyperBandScheduler] = {}
        self.stopped: dict[str, list[str]] = {}  # arm -> trial ids stopped early, in order
        for arm, curves in (history or {}).items():
            self._prefill(self._arm(arm), arm, curves)

    def _arm(self, arm: str) -> AsyncHyperBandScheduler:
        if arm not in self.arms:
            self.arms[arm] = AsyncHyperBandScheduler(**self._options)
        return self.arms[arm]

    @staticmethod
    def _prefill(asha: AsyncHyperBandScheduler, arm: str, curves: list[dict[int, float]]) -> None:
        (bracket,) = asha._brackets  # one bracket: plain ASHA
        for i, curve in enumerate(curves):
            key = f"history:{arm}:{i}"
            for milestone, recorded in bracket._rungs:
                # ASHA records a trial at the first result with epoch >= milestone
                reached = [e for e in sorted(curve) if e >= milestone and curve[e] is not None]
                if reached:
                    recorded[key] = curve[reached[0]]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True  # metric and mode are fixed at construction

    def on_trial_add(self, tune_controller, trial) -> None:
        self._arm(_arm_of(trial)).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        arm = _arm_of(trial)
        action = self._arm(arm).on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and result.get("epoch", 0) < self._options["max_t"]:
            self.stopped.setdefault(arm, []).append(trial.trial_id)
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        self._arm(_arm_of(trial)).on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self._arm(_arm_of(trial))._trial_info.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        return "PerArmASHA: " + ", ".join(
            f"{arm}: {len(ids)} stopped" for arm, ids in self.stopped.items()
        )


# --- searching ----------------------------------------------------------------------------------


class ArmSearcher(Searcher):
    """Ray's Searcher over `ArmSearch`; with `specs` given, it serves that fixed list instead."""

    def __init__(self, search: ArmSearch, specs: list[TrialSpec] | None = None):
        super().__init__(metric=search.space.objective, mode="max")
        self.search = search
        self.specs = list(specs) if specs is not None else None
        self.numbers: dict[str, int] = {}
        self.status: dict[str, TrialStatus] = {}  # trial id -> how it ended, for the writer

    # Ray pickles the Tuner (searcher included) for its own restore. bootstudy resumes from the
    # store instead, so the live Optuna/SQL handles are simply left out of what Ray saves.
    def __getstate__(self) -> dict:
        return {}

    def save_to_dir(self, *args, **kwargs) -> None:
        pass

    def suggest(self, trial_id: str) -> dict | str | None:
        if self.interrupt is not None and self.interrupt.requested:
            return Searcher.FINISHED
        if self.specs is not None:
            spec = self.specs.pop(0) if self.specs else None
        else:
            spec = self.search.next_trial()
        if spec is None:
            return Searcher.FINISHED
        self.numbers[trial_id] = spec.number
        return spec.as_config()

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.search.on_result(self.numbers[trial_id], result)

    interrupt: Interrupt | None = None  # set by `run_trials`

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        interrupted = self.interrupt is not None and trial_id in self.interrupt.stopped
        number = self.numbers.pop(trial_id, None)
        if number is not None:
            self.status[trial_id] = self.search.on_complete(number, result, error, interrupted)

    def abandon_unfinished(self) -> None:
        """Trials an interrupt cut off before Ray told us they ended: INTERRUPTED in Optuna too."""
        for trial_id, number in list(self.numbers.items()):
            self.status[trial_id] = self.search.on_complete(number, None, False, True)
        self.numbers.clear()


# --- recording ----------------------------------------------------------------------------------


class StoreCallback(tune.Callback):
    """The single writer: every trial event goes to the store, from the driver process."""

    def __init__(
        self,
        store: Store,
        study_id: int,
        searcher: ArmSearcher,
        optuna_study_name: Callable[[str], str],
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ):
        self.store, self.study_id, self.searcher = store, study_id, searcher
        self.optuna_study_name = optuna_study_name
        self.on_event = on_event or (lambda kind, info: None)
        self.rows: dict[str, int] = {}  # Ray trial id -> our trial id
        self.started: dict[str, float] = {}
        self.last: dict[str, dict[str, Any]] = {}
        # Epochs of fast trials are written in batches: at most one write per trial per
        # FLUSH_SECONDS, and always when the trial ends. A real epoch takes longer than that, so
        # real studies still write every epoch as it happens.
        self.pending: dict[str, dict[int, dict[str, float]]] = {}
        self.flushed: dict[str, float] = {}
        self.open: dict[str, Any] = {}  # Ray trial id -> trial, started and not yet ended
        self.trial_timeout: float | None = None  # --trial-timeout, set by run_trials
        self.failed_attempts: dict[str, list[str]] = {}  # Ray trial id -> errors Ray retried

    def __getstate__(self) -> dict:  # see ArmSearcher.__getstate__
        return {}

    def _info(self, trial, **extra) -> dict[str, Any]:
        meta = trial.config["meta"]
        return {
            "number": meta["number"],
            "arm": meta["arm"],
            "params": meta["params"],
            "phase": meta["phase"],
            "epochs": trial.config["train"].get("epochs"),  # for the live view's "ep 3/10"
            **extra,
        }

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if trial.trial_id in self.rows:  # a retried trial keeps its row
            return
        meta, train = trial.config["meta"], trial.config["train"]
        optuna_id = meta.get("optuna_trial_id")
        self.rows[trial.trial_id] = self.store.start_trial(
            self.study_id,
            arm=meta["arm"],
            arm_factors=meta["arm_factors"],
            number=meta["number"],
            phase=meta["phase"],
            params=meta["params"],
            config=train,
            config_hash=meta["config_hash"],
            seed=train["seed"],
            optuna_study_name=self.optuna_study_name(meta["arm"]) if optuna_id else None,
            optuna_trial_id=optuna_id,
            ray_trial_id=trial.trial_id,
        )
        self.started[trial.trial_id] = time.monotonic()
        self.open[trial.trial_id] = trial
        self.searcher.search.on_start(meta["number"], self.rows[trial.trial_id])
        self.on_event("start", self._info(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        payload = result.get("trainer")
        if not payload or "epoch" not in payload.get("metrics", {}):
            return
        metrics = payload["metrics"]
        self.last[trial.trial_id] = payload
        values = {k: v for k, v in metrics.items() if k != "epoch"}
        self.pending.setdefault(trial.trial_id, {})[int(metrics["epoch"])] = values
        if time.monotonic() - self.flushed.get(trial.trial_id, 0.0) >= self.FLUSH_SECONDS:
            self._flush(trial.trial_id)
        self.on_event(
            "epoch", self._info(trial, epoch=int(metrics["epoch"]), val_acc=metrics.get("val_acc"))
        )

    FLUSH_SECONDS = 1.0

    def _flush(self, trial_id: str) -> None:
        epochs = self.pending.pop(trial_id, None)
        if epochs:
            self.store.record_epochs(self.rows[trial_id], epochs)
        self.flushed[trial_id] = time.monotonic()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.open.pop(trial.trial_id, None)
        self._flush(trial.trial_id)
        status = self.searcher.status.pop(trial.trial_id, TrialStatus.COMPLETE)
        payload = self.last.pop(trial.trial_id, None) or {}
        final = payload.get("result") or {}
        metrics = payload.get("metrics") or {}
        self.store.finish_trial(
            self.rows[trial.trial_id],
            status,
            result=final or None,
            trial_seconds=self._seconds(trial),
            final_val_acc=metrics.get("val_acc"),
            test_acc=final.get("test_acc"),
            test_acc_agent=final.get("test_acc_agent"),
            # a trial that failed, was retried (--retries) and then ended well keeps its failures
            error=self._attempts(trial.trial_id),
        )
        self.on_event(
            "end",
            self._info(
                trial,
                status=status,
                val_acc=metrics.get("val_acc"),
                epoch=metrics.get("epoch"),
                test_acc=final.get("test_acc"),  # what a final run is for
            ),
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.open.pop(trial.trial_id, None)
        self._flush(trial.trial_id)
        self.searcher.status.pop(trial.trial_id, None)
        payload = self.last.pop(trial.trial_id, None) or {}
        error = _error_text(trial)
        seconds = self._seconds(trial)
        if (
            self.trial_timeout is not None
            and seconds >= self.trial_timeout
            and "TrialTimeout" not in error
        ):  # stuck past the timeout in one C call: its worker ended itself, Ray saw a dead actor
            error = f"{error}\nTrialTimeout: {timeout_message(self.trial_timeout)}"
        # (Ray's error file already holds every attempt's failure: "Failure # 1", "# 2", ...)
        self.failed_attempts.pop(trial.trial_id, None)
        self.store.finish_trial(
            self.rows[trial.trial_id],
            TrialStatus.FAILED,
            error=error,
            trial_seconds=seconds,
            final_val_acc=(payload.get("metrics") or {}).get("val_acc"),
        )
        self.on_event(
            "end", self._info(trial, status=TrialStatus.FAILED, error=error.splitlines()[-1])
        )

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        """A trial failed and Ray runs it again (--retries): its row keeps the failure now, so
        the attempt leaves a trace whatever the retry does."""
        attempts = self.failed_attempts.setdefault(trial.trial_id, [])
        attempts.append(f"attempt {len(attempts) + 1} failed, retried:\n{_error_text(trial)}")
        row = self.rows.get(trial.trial_id)
        if row is not None:
            self.store.note_failed_attempts(row, self._attempts(trial.trial_id))

    def _attempts(self, trial_id: str) -> str | None:
        return "\n".join(self.failed_attempts.get(trial_id, ())) or None

    def close_interrupted(self) -> None:
        """Record the trials an interrupt stopped before Ray reported their end: INTERRUPTED,
        with every epoch they finished."""
        for trial in list(self.open.values()):
            del self.open[trial.trial_id]
            self._flush(trial.trial_id)
            self.searcher.status.pop(trial.trial_id, None)
            payload = self.last.pop(trial.trial_id, None) or {}
            metrics = payload.get("metrics") or {}
            self.store.finish_trial(
                self.rows[trial.trial_id],
                "INTERRUPTED",
                trial_seconds=self._seconds(trial),
                final_val_acc=metrics.get("val_acc"),
            )
            self.on_event(
                "end",
                self._info(
                    trial,
                    status="INTERRUPTED",
                    val_acc=metrics.get("val_acc"),
                    epoch=metrics.get("epoch"),
                ),
            )

    def _seconds(self, trial) -> float:
        return time.monotonic() - self.started.get(trial.trial_id, time.monotonic())


def _caused_by_storage() -> bool:
    """Whether the exception being handled comes from the database (a `BootstudyError`): the
    driver prints it as one line, without Tune's traceback."""
    from trainers.errors import BootstudyError

    err, seen = sys.exc_info()[1], set()
    while err is not None and id(err) not in seen:
        if isinstance(err, BootstudyError):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


def _error_text(trial) -> str:
    """The trial's error with its traceback, as Ray saved it on the driver."""
    path = getattr(trial, "error_file", None)
    if path and os.path.exists(path):
        return Path(path).read_text()[-20000:]
    message = getattr(trial, "error_msg", None)
    return str(message) if message else "trial raised an error (no traceback recorded by Ray)"


# --- the trial process ----------------------------------------------------------------------------


# The dataset, per worker process: fetched from the object store once, then reused by every trial
# that runs in the (reused) actor, instead of being deserialised again for each trial.
_DATA: dict[str, Any] = {}


def _dataset(data_ref: list | None):
    if not data_ref:
        return None
    (ref,) = data_ref
    key = ref.hex()
    if key not in _DATA:
        _DATA.clear()  # one study's data at a time
        _DATA[key] = ray.get(ref)
    return _DATA[key]


def _trial(
    config: dict[str, Any],
    watchdog: WatchdogSpec,
    data_ref=None,
    train_fn: TrainFn | None = None,
    weights_dir: str | None = None,
) -> None:
    """Runs inside a Ray worker: train, report every epoch, the last one with the test results.

    `watchdog`: the driver's identity and --trial-timeout; the trial ends when the driver dies or
    its time is up (study/watchdog.py). `weights_dir`: keep the best-validation weights in
    `<weights_dir>/trial-<number>` (the real trainer only)."""
    with Watchdog(watchdog):
        return _train_and_report(config, data_ref, train_fn, weights_dir)


def _train_and_report(
    config: dict[str, Any], data_ref, train_fn: TrainFn | None, weights_dir: str | None = None
) -> None:
    data = _dataset(data_ref)
    if train_fn is None:
        import torch  # only the real trainer needs it (stand-ins in tests and benches don't)

        resources = tune.get_context().get_trial_resources()
        cpus = max(1, int(resources.required_resources.get("CPU", 1)))
        torch.set_num_threads(cpus)  # one trial per CPU slot; oversubscription slows everyone
    cfg = TrainConfig.from_dict(config["train"])
    held: list[dict[str, float]] = []  # the last epoch, sent with the test results
    last: list[dict[str, float]] = []

    def report(metrics: dict[str, float]) -> None:
        metrics = {k: float(v) for k, v in metrics.items()}
        last[:] = [metrics]
        if int(metrics["epoch"]) >= cfg.epochs:
            held[:] = [metrics]  # sent below with the test results: one message, one row
            return
        tune.report({**metrics, "trainer": {"metrics": metrics}})

    try:
        if train_fn is None and weights_dir is not None:
            where = trial_weights(weights_dir, config["meta"]["number"])
            result = _train_and_save(cfg, report, data, where)
        else:
            result = (train_fn or _default_train)(cfg, report, data=data)
    except BaseException:
        if held:  # trained but failed after (e.g. out of memory in the test pass): keep the epoch
            tune.report({**held[0], "trainer": {"metrics": held[0]}})
        raise
    metrics = held[0] if held else (last[0] if last else {})
    tune.report({**metrics, "trainer": {"metrics": metrics, "result": _jsonable(result)}})


def _default_train(cfg, report, data=None):
    from trainers.training import train

    return train(cfg, report, data=data)


def _train_and_save(cfg, report, data, where: Path) -> dict[str, Any]:
    """Train, then keep the best-validation weights; the result names where they are."""
    from trainers.training import train
    from trainers.weights import BestWeights, check_weights_dir, save_weights

    check_weights_dir(where)  # refused before the training it would throw away
    best = BestWeights()
    result = train(cfg, report, data=data, checkpoint=best)
    saved = save_weights(where, cfg, best, data)
    return {
        **result,
        "weights_dir": str(where.resolve()),
        "weights_epoch": saved["epoch"],
        "weights_test_acc": saved["test_acc"],
    }


def _jsonable(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool, type(None)))}


# --- running --------------------------------------------------------------------------------------


def ray_session(
    address: str | None,
    num_cpus: int | None = None,
    quiet: bool = True,
    keep_out: tuple[str, ...] = (),
):
    """Start (or join, with `address`) Ray; returns a function that shuts it down again.

    A local Ray that is already up (started in a notebook, or once for a whole test session) is
    used as it is and left running: its owner shuts it down, and each study saves Ray's start-up
    and gets warm workers. A Ray started here ships the driver's code to the workers
    (`study.frozen_code`), never the folders in `keep_out`."""
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/JSON/TB per trial
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Ray Tune's SIGINT handler ends the run as if it had finished; `Interrupt` handles it.
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    if address is None and ray.is_initialized():
        return lambda: None
    kwargs: dict[str, Any] = dict(
        include_dashboard=False,
        log_to_driver=not quiet,
        logging_level=logging.ERROR,
        configure_logging=True,
    )
    # Ray records the driver's command line as the job's entrypoint (its dashboard and `ray list
    # jobs` show it): record it with any storage password masked.
    utils = ray._private.utils
    entrypoint = getattr(utils, "get_entrypoint_name", None)
    if entrypoint is not None:
        utils.get_entrypoint_name = _masked_entrypoint
    kwargs["runtime_env"] = frozen_code.runtime_env(local=address is None, keep_out=keep_out)
    try:
        return _init(address, num_cpus, kwargs)
    finally:
        if entrypoint is not None:
            utils.get_entrypoint_name = entrypoint


def _masked_entrypoint() -> str:
    from study.engine import mask_password  # the driver only: workers never import SQLAlchemy

    return " ".join(mask_password(w) if "://" in w else w for w in sys.argv)


def _init(address: str | None, num_cpus: int | None, kwargs: dict[str, Any]):
    if address:
        _check_reachable(address)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(f"cannot join the Ray cluster at '{address}': {first}") from None
    else:
        # Ray's processes (GCS, raylet, workers) start with SIGTERM blocked, as Ray itself blocks
        # SIGINT in them: a signal to the whole process group (`timeout`, systemd, Kubernetes)
        # reaches the driver alone, which then stops the trials and Ray in order. Before, the
        # GCS died at once and the driver hung 60 s on it, then exited 1 leaving rows RUNNING.
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        try:
            ray.init(num_cpus=num_cpus, **kwargs)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    for name in ("ray", "ray.tune", "ray.train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if address:
        return ray.shutdown
    # A local Ray writes a new session directory (logs, sockets) under /tmp/ray on every start
    # and never removes it. Trials' errors are in the store and Tune's files under runs/ray, so
    # the session of a Ray we started goes with it.
    node = getattr(ray._private.worker, "_global_node", None)
    session = Path(node.get_session_dir_path()) if node is not None else None

    def shutdown() -> None:
        ray.shutdown()
        if session is not None and session.name.startswith("session_"):
            shutil.rmtree(session, ignore_errors=True)

    return shutdown


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, with one line, where Ray itself would retry a dead address for minutes."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address must be HOST:PORT (or auto), got '{address}'")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as err:
        raise ConfigError(
            f"cannot join the Ray cluster at '{address}': {err.strerror or err} "
            "(is `ray start --head` running there?)"
        ) from None


def check_trial_fits(cpus: float, gpus: float) -> None:
    """One line now, where Ray would otherwise wait forever for a node that can take a trial."""
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(n.get("CPU", 0) >= cpus and n.get("GPU", 0) >= gpus for n in nodes):
        return
    biggest = ", ".join(f"{n.get('CPU', 0):g} CPU / {n.get('GPU', 0):g} GPU" for n in nodes)
    raise ConfigError(
        f"no Ray node can run a trial needing {cpus:g} CPU / {gpus:g} GPU (nodes: {biggest}); "
        "lower --cpus-per-trial / --gpus-per-trial"
    )


def trial_name(trial) -> str:
    """Ray's name and directory for a trial: trial_<number>, the study's trial number (what the
    terminal, the report and the dashboard's `bootstudy_trial` show), not Ray's _trial_eac73187_3.
    Numbers never repeat within a study (a resumed study goes on counting), so neither do the
    directories under its experiment."""
    number = (trial.config.get("meta") or {}).get("number")
    return f"trial_{number}" if number is not None else f"trial_{trial.trial_id}"


def cluster_resources() -> dict[str, float]:
    return dict(ray.cluster_resources())


def _loggers(tensorboard: bool) -> list:
    """Ray Tune's own TensorBoard logger (tensorboardX), fed only the epoch's metrics and, at
    the end, the result's numbers (`result/test_acc`, ...), not our payload's copies of them."""
    if not tensorboard:
        return []
    from ray.tune.logger import TBXLoggerCallback

    class Scalars(TBXLoggerCallback):
        def log_trial_result(self, iteration: int, trial, result: dict) -> None:
            payload = result.get("trainer") or {}
            flat = {k: v for k, v in result.items() if k != "trainer"}
            numbers = (int, float)
            flat.update(
                {
                    f"result/{k}": v
                    for k, v in (payload.get("result") or {}).items()
                    if isinstance(v, numbers) and not isinstance(v, bool)
                }
            )
            super().log_trial_result(iteration, trial, flat)

    return [Scalars()]


def run_trials(
    *,
    name: str,
    searcher: ArmSearcher,
    scheduler: TrialScheduler | None,
    callback: StoreCallback,
    data: Any,
    num_samples: int,
    concurrency: int,
    cpus_per_trial: float,
    gpus_per_trial: float,
    retries: int,
    results_dir: str,
    train_fn: TrainFn | None = None,
    interrupt: Interrupt | None = None,
    trial_timeout: float | None = None,
    weights_dir: str | None = None,
    tensorboard: bool = False,
) -> None:
    """Run the trials the searcher hands out until it says FINISHED (or `interrupt` stops them).

    `trial_timeout`: seconds one trial may train; past it, it fails (its epochs kept).
    `weights_dir`: each trial keeps its best-validation weights below it (see `_trial`).
    `tensorboard`: Ray Tune's own TensorBoard logger writes each trial's event file under
    `<results_dir>/ray/<name>/<trial>/` (`tensorboard --logdir <results_dir>/ray`)."""
    interrupt = interrupt or Interrupt()
    scheduler = scheduler or _Interruptible()
    scheduler.interrupt = searcher.interrupt = interrupt
    # The ref travels inside a list so Ray passes it unresolved; `_dataset` caches it per worker.
    data_ref = [ray.put(data)] if data is not None else None
    callback.trial_timeout = trial_timeout
    watchdog = WatchdogSpec.here(trial_timeout)  # workers also end when this driver dies
    trainable = tune.with_parameters(
        _trial, data_ref=data_ref, train_fn=train_fn, watchdog=watchdog, weights_dir=weights_dir
    )
    trainable = tune.with_resources(trainable, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=scheduler,
            num_samples=num_samples,
            max_concurrent_trials=concurrency or None,
            reuse_actors=True,
            trial_name_creator=trial_name,  # trial_<number>: the study's own name for it
            trial_dirname_creator=trial_name,
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(Path(results_dir).resolve() / "ray"),
            verbose=0,
            callbacks=[callback, *_loggers(tensorboard)],
            stop=_InterruptStopper(interrupt, running=lambda: len(callback.open)),
            failure_config=tune.FailureConfig(max_failures=retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            log_to_file=True,
        ),
    )
    try:
        with interrupt.tune_loop():
            tuner.fit()
    except Exception:  # Tune's own errors: the store already has every finished trial
        if not callback.store.fenced_out and not _caused_by_storage():  # the driver's one line
            log.error("Ray Tune stopped: %s", traceback.format_exc())
        raise
    if interrupt.requested:
        # Trials stopped at once (second signal, or past the grace) never reach Tune's callbacks.
        callback.close_interrupted()
        searcher.abandon_unfinished()
