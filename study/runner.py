"""Run a whole study: validate, record, search every arm, re-run the winners, summarise.

Order matters for "nothing half-written": everything that can fail on bad input (space, storage
URL, dataset) is checked before the study row is created.
"""

from __future__ import annotations

import dataclasses
import shlex
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces.order import arm_order
from study import provenance
from study.arm_search import ArmSearch
from study.engine import StorageError, mask_password, optuna_storage
from study.lease import Lease, this_driver
from study.live import LiveView
from study.plan import StudyConfig
from study.status import HAS_RESULT, TRAINED, Phase, StudyStatus
from study.store import LeaseLost, Store, StudyRecord
from trainers.config import TrainConfig
from trainers.datasets import load_dataset
from trainers.errors import ConfigError, Interrupted
from trainers.outputs import check_writable_dir

__all__ = ["run_study", "StudySummary", "dashboard_command", "resume_command", "weights_dir"]


@dataclass(frozen=True)
class StudySummary:
    name: str
    storage: str
    counts: dict[str, int]  # status -> trials
    best: dict[str, dict[str, Any]]  # arm -> best trial (params, val_acc, test_acc)
    seconds: float


def dashboard_command(storage: str) -> str:
    return f"optuna-dashboard '{storage}'"


def run_study(
    config: StudyConfig,
    *,
    command: str | None = None,
    resume: bool = False,
    train_fn=None,
    out=sys.stdout,
) -> StudySummary:
    """Run (or resume) the study `config` describes; returns what it found.

        >>> from study.plan import StudyConfig
        >>> from study.runner import run_study
        >>> summary = run_study(StudyConfig(space="loss_weights", name="lw", preset="smoke"))
        ... # doctest: +SKIP

    `command`: what the study records as the command that started it (none: the equivalent
    `run_study.py` command line, which is also what the resume hint prints). `train_fn`
    replaces the trainer (tests drive the orchestration with hand-made curves). The report is
    not built here: `run_study.py` builds it from the store afterwards (`reports.build_report`).
    """
    started = time.monotonic()
    command = command or equivalent_command(config)
    check_writable_dir(config.results_dir, "results")
    if config.save_weights and config.final_seeds:
        weights_dir(config)  # a folder that would hold the database: refused before any write
    # A refused run leaves no trace: a SQLite file it created for a study it never started goes
    # again (see `_forget_new_file`); a resumed study's database must exist.
    new_file = _new_sqlite_file(config.storage)
    # a bad URL or unreachable server fails before loading
    store = Store.open_existing(config.storage) if resume else Store.open(config.storage)
    try:
        return _run(config, store, command, resume, train_fn, out, started)
    except BaseException:
        _forget_new_file(store, config, new_file)
        raise


def _run(
    config: StudyConfig,
    store: Store,
    command: str,
    resume: bool,
    train_fn: Callable[..., dict[str, Any]] | None,
    out: Any,
    started: float,
) -> StudySummary:
    """`run_study` once its store is open: checks, the lease, Ray, the phases, the summary."""
    store.check_integrity()  # a damaged SQLite file: one line now, not Optuna's traceback later
    study = store.get_study(config.name) if resume else None
    if study is not None:
        if study.space != config.space:
            raise ConfigError(
                f"study '{config.name}' is a '{study.space}' study, not '{config.space}'"
            )
        config = _resumed(config, study)
        _check_same_trainer(store, config.name)
    elif config.name in {s.name for s in store.list_studies()}:
        raise ConfigError(
            f"study '{config.name}' already exists in {mask_password(config.storage)}; "
            "use --resume to continue it or --study to name a new one"
        )
    # Ray is imported here, not at module import: --help, --list-spaces and errors stay fast.
    from study import ray_tune

    # A live driver of this study refuses us before anything is loaded or written.
    lease = Lease.claim(store, config.name, study.id) if study is not None else None
    shutdown = _nothing
    try:
        # a bad --address fails before any write; results never travel with the job's code
        shutdown = ray_tune.ray_session(config.address, keep_out=(config.results_dir,))
        ray_tune.check_trial_fits(config.cpus_per_trial, config.gpus_per_trial)
        data = load_dataset(config.dataset, config.data_dir)  # missing data: before any write
        _check_fractions(config, data)
    except BaseException:
        shutdown()
        if lease is not None:
            lease.release()
        raise
    if study is not None:
        print(
            f"resuming '{config.name}' with its own settings: preset {config.preset}, "
            f"{config.trials_per_arm} trial(s)/arm, {config.epochs} epochs, "
            f"{len(config.arms())} arm(s)",
            file=out,
        )
    status = StudyStatus.FAILED
    storage_failed = False
    live = None
    interrupt = ray_tune.Interrupt(out=sys.stderr)
    try:
        with interrupt.installed():
            info = provenance.collect()
            code = info["code_version"]
            storage = optuna_storage(config.storage)
            if resume:
                lease.start()  # fences every later write, ours and Optuna's (study.lease)
                store.fence_optuna(storage)
                stale = store.mark_stale_running(study.id)
                names = [config.optuna_study_name(a) for a in config.arms()]
                # our rows are the truth: a result we stored but Optuna had not yet been told
                # of (it is told asynchronously) is told now, not thrown away as FAIL
                store.settle_stale_optuna_trials(storage, names, config.search_space.objective)
                store.set_study_status(config.name, StudyStatus.RUNNING, finished=False)
                print(
                    f"resuming '{config.name}': {len(stale)} stale trial(s) marked FAILED", file=out
                )
            else:
                study = store.create_study(
                    config.name,
                    config.space,
                    config.dataset,
                    config.preset,
                    command,
                    # the URL's password stays on the command line that gave it
                    {**config.report_config(), "storage": mask_password(config.storage)},
                    info,
                    **config.facts(),
                    driver=this_driver(),
                )
                lease = Lease(store, study.id).start()
                store.fence_optuna(storage)
            search = ArmSearch(config, store, study, storage, code)
            live = LiveView(out, total=search.remaining() + config.final_seeds * len(search.arms))
            phases = _Phases(config, study, store, search, live, data, train_fn, interrupt)
            phases.run_search()
            if config.final_seeds:
                phases.run_final()
            status = StudyStatus.INTERRUPTED if interrupt.requested else StudyStatus.FINISHED
            if status == StudyStatus.FINISHED:
                # Nothing runs any more: an Optuna trial still RUNNING is an ask whose answer a
                # lost connection swallowed (asked again since). It gets the state our rows say.
                store.settle_stale_optuna_trials(
                    storage,
                    [config.optuna_study_name(a) for a in config.arms()],
                    config.search_space.objective,
                )
    except KeyboardInterrupt:
        status = StudyStatus.INTERRUPTED
        raise
    except Exception as err:
        if store.fenced_out:  # taken over while paused: whatever broke, this is the one line
            raise _lost(store, err) from None
        cause = _cause(err, StorageError)
        if cause is None:
            raise
        # The database failed past its retries (a full disk, a dropped table, an outage longer
        # than RECONNECT_SECONDS): one line, and the study left as resumable as it can be.
        status, storage_failed = StudyStatus.INTERRUPTED, True
        _best_effort(store.mark_running_interrupted, study.id if study is not None else None)
        raise StorageError(
            f"{cause}; the study stopped: its finished trials are safe, and once the database is "
            f"fixed it continues with: {resume_command(command, config)}"
        ) from None
    finally:
        if study is not None and not store.fenced_out:
            if storage_failed:  # a second failure must not hide the first one's line
                _best_effort(store.set_study_status, config.name, status)
            else:
                store.set_study_status(config.name, status)
        if lease is not None and storage_failed:
            _best_effort(lease.release)
        elif lease is not None:
            lease.release()
        shutdown()
        if live is not None:
            live.close()
    if status == StudyStatus.INTERRUPTED:
        message = _interrupted_message(store, config, interrupt.name, command)
        raise Interrupted(message, interrupt.signal or signal.SIGINT)

    summary = _summarise(store, config, time.monotonic() - started, search.reused)
    _print_summary(summary, config, out)
    return summary


# What a resumed study may take from the new command line: where and how it runs, not what it is.
RESOURCE_FIELDS = (
    "storage",
    "concurrency",
    "cpus_per_trial",
    "gpus_per_trial",
    "address",
    "retries",
    "trial_timeout",
    "results_dir",
)


def _resumed(config: StudyConfig, study) -> StudyConfig:
    """The study's stored config, with only the resource options of this run's `config`."""
    fields = {f.name for f in dataclasses.fields(StudyConfig)}
    stored = {k: v for k, v in study.config.items() if k in fields}
    stored.update({k: getattr(config, k) for k in RESOURCE_FIELDS})
    return StudyConfig.from_dict(stored)


def _check_same_trainer(store: Store, name: str) -> None:
    """Refuse to resume a study whose trials were configured by a trainer with fewer fields: its
    remaining trials would take the new fields' defaults, another method than its first trials
    (e.g. the hint summed over blocks where they averaged it)."""
    stored = store.trials_frame(name, ["config_json"], parsed=True)["config"]
    if stored.empty:
        return
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    missing = sorted(known - set(stored.iloc[0]))
    if missing:
        raise ConfigError(
            f"study '{name}' was run by an earlier bootstudy whose trials had no "
            f"{', '.join(missing)}: resumed, its remaining trials would train with their new "
            "defaults, another method; start a new study (--study NAME)"
        )


def _nothing() -> None:
    pass


def _new_sqlite_file(url: str) -> Path | None:
    """The SQLite file `url` names if it does not exist yet (this run would create it)."""
    from study.engine import normalize_url

    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite" or Path(parsed.database).exists():
        return None
    return Path(parsed.database)


def _forget_new_file(store: Store, config: StudyConfig, path: Path | None) -> None:
    """Remove the SQLite file this run created, if the run ended before creating its study."""
    if path is None:
        return
    try:
        if store.list_studies():
            return
    except Exception:  # unreadable: leave it as it is
        return
    store.close()
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _check_fractions(config: StudyConfig, data: Any) -> None:
    """Every arm's data_fraction leaves at least one training image of each class.

    The trainer keeps at least one image per class whatever the fraction, so `--arm
    data_fraction=1e-9` trained silently on 10 images; it is refused here, before the study is.
    """
    import torch

    space = config.search_space
    counts = torch.bincount(data.train_labels, minlength=data.num_classes)
    for arm in config.arms():
        trial = space.trial_config(
            config.preset, arm, {}, config.trainer_base(), config.trial_overrides(arm)
        )
        fewest = int(counts.min()) - round(int(counts.min()) * trial.val_fraction)
        if round(fewest * trial.data_fraction) < 1:
            raise ConfigError(
                f"arm {arm.name}: data_fraction={trial.data_fraction:g} leaves no training image "
                f"of some class of {config.dataset} (its smallest class has {fewest} after the "
                f"validation split): use data_fraction >= {1 / fewest:.2g}"
            )


def _cause(err: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first `kind` error in `err`'s chain (Ray Tune re-raises a callback's error wrapped)."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _best_effort(write: Callable[..., Any], *args: Any) -> None:
    """A write after the database already failed: tried once, its own failure ignored."""
    if args and args[0] is None:
        return
    try:
        write(*args)
    except Exception:
        pass


def _lost(store: Store, err: BaseException) -> LeaseLost:
    """The `LeaseLost` behind `err` (Ray Tune or Optuna may wrap it), or a new one."""
    seen = err
    while seen is not None:
        if isinstance(seen, LeaseLost):
            return seen
        seen = seen.__cause__ or seen.__context__
    return LeaseLost(f"this driver lost the study to another driver while paused ({err})")


def _interrupted_message(store: Store, config: StudyConfig, signal_name: str, command: str) -> str:
    by_status = store.trials_frame(config.name)["status"].value_counts()
    counts = ", ".join(f"{int(n)} {status}" for status, n in sorted(by_status.items()))
    return (
        f"study '{config.name}' stopped by {signal_name or 'KeyboardInterrupt'} "
        f"({counts or 'no trials yet'}); continue it with: {resume_command(command, config)}"
    )


def equivalent_command(config: StudyConfig) -> str:
    """The `run_study.py` command line naming a study started from Python (password masked)."""
    words = ["run_study.py", "--space", config.space, "--study", config.name]
    words += ["--preset", config.preset, "--storage", mask_password(config.storage)]
    words += ["--results-dir", config.results_dir]
    return " ".join(shlex.quote(w) for w in words)


def resume_command(command: str, config: StudyConfig) -> str:
    """The command that continues this study: the original one, with --study and --resume."""
    words = shlex.split(command) if command else ["run_study.py"]
    if "--resume" not in words:
        words.append("--resume")
    if "--study" not in words and not any(w.startswith("--study=") for w in words):
        words += ["--study", config.name]
    return " ".join(shlex.quote(w) for w in words)


@dataclass
class _Phases:
    """The two phases of one study run, and what both use (Ray is imported only in here)."""

    config: StudyConfig
    study: StudyRecord
    store: Store
    search: ArmSearch
    live: LiveView
    data: Any
    train_fn: Callable[..., dict[str, Any]] | None
    interrupt: Any  # ray_tune.Interrupt: a signal between phases starts nothing more

    def run_search(self) -> None:
        from study import ray_tune

        if self.interrupt.requested:
            return
        samples = self.search.remaining()
        if samples == 0:
            return
        scheduler = ray_tune.PerArmASHA(
            self.search.space.objective,
            self.config.epochs,
            self.config.grace_epochs,
            self.config.reduction_factor,
            history=_history(self.store, self.config),
        )
        self.live.phase(
            f"search: {len(self.search.arms)} arm(s) x {self.config.trials_per_arm} trial(s), "
            f"ASHA rungs at epochs {', '.join(map(str, self.study.rungs)) or 'none'}"
        )
        self._run(Phase.SEARCH, ray_tune.ArmSearcher(self.search), scheduler, samples)

    def run_final(self) -> None:
        from study import ray_tune

        if self.interrupt.requested:
            return
        specs = self.search.final_trials()
        if not specs:
            return
        self.live.phase("final: best config per arm on new seeds, evaluated on test")
        self._run(Phase.FINAL, ray_tune.ArmSearcher(self.search, specs), None, len(specs))

    def _run(self, phase: Phase, searcher, scheduler, samples: int) -> None:
        from study import ray_tune

        config = self.config
        callback = ray_tune.StoreCallback(
            self.store, self.study.id, searcher, config.optuna_study_name, self.live.event
        )
        ray_tune.run_trials(
            name=f"{config.name}-{phase}-{int(time.time())}",
            searcher=searcher,
            scheduler=scheduler,
            callback=callback,
            data=self.data,
            num_samples=samples,
            concurrency=config.concurrency or _default_concurrency(config),
            cpus_per_trial=config.cpus_per_trial,
            gpus_per_trial=config.gpus_per_trial,
            retries=config.retries,
            results_dir=config.results_dir,
            train_fn=self.train_fn,
            interrupt=self.interrupt,
            trial_timeout=config.trial_timeout,
            weights_dir=self._weights_dir(phase),
            tensorboard=config.tensorboard,
        )
        self.search.drain()  # every Optuna write of the phase is in before the next phase asks
        if self.store.fenced_out:  # a write refused, and Tune went on: stop here all the same
            raise LeaseLost(f"this driver lost study '{config.name}' to another driver")

    def _weights_dir(self, phase: Phase) -> str | None:
        """Final runs' weights: <results_dir>/weights/<study>/ (a trial adds trial-<number>)."""
        if phase != Phase.FINAL or not self.config.save_weights:
            return None
        return str(weights_dir(self.config))


def weights_dir(config: StudyConfig) -> Path:
    """Where a study's final runs keep their weights; never the database file or its folder's
    other studies' files: one folder per study name, below the results directory."""
    from trainers.home import weights_folder

    path = weights_folder(config.results_dir, config.name)
    database = _sqlite_path(config.storage)
    if database is not None and (path == database or database.is_relative_to(path)):
        raise ConfigError(f"the weights folder '{path}' would hold the database '{database}'")
    return path


def _sqlite_path(url: str) -> Path | None:
    prefix = "sqlite:///"
    return Path(url[len(prefix) :]).resolve() if url.startswith(prefix) else None


def _default_concurrency(config: StudyConfig) -> int:
    from study import ray_tune

    resources = ray_tune.cluster_resources()
    by_cpu = int(resources.get("CPU", 1) // config.cpus_per_trial)
    if config.gpus_per_trial > 0:
        return max(1, min(by_cpu, int(resources.get("GPU", 0) // config.gpus_per_trial)))
    return max(1, by_cpu)


def _history(store: Store, config: StudyConfig) -> dict[str, list[dict[int, float]]]:
    """Earlier trials' objective per epoch and arm: a resumed study's ASHA rungs start there."""
    trials = store.trials_frame(config.name)
    if trials.empty:
        return {}
    metrics = store.metrics_frame(config.name)
    objective = config.search_space.objective
    metrics = metrics[metrics["name"] == objective]
    done = trials[trials["status"].isin(TRAINED) & (trials["phase"] == Phase.SEARCH)]
    arm_of = dict(zip(done["id"], done["arm"], strict=True))
    out: dict[str, list[dict[int, float]]] = {}
    for trial_id, rows in metrics[metrics["trial_id"].isin(arm_of)].groupby("trial_id"):
        curve = dict(zip(rows["epoch"].astype(int), rows["value"], strict=True))
        out.setdefault(arm_of[trial_id], []).append(curve)
    return out


def _summarise(store: Store, config: StudyConfig, seconds: float, reused: int) -> StudySummary:
    trials = store.trials_frame(config.name, parsed=True)
    counts = {str(k): int(v) for k, v in trials["status"].value_counts().items()}
    best: dict[str, dict[str, Any]] = {}
    # A searchless (designed) study has only final runs: each arm's best is its best final run.
    phase = Phase.FINAL if config.searchless else Phase.SEARCH
    search = trials[(trials["phase"] == phase) & trials["status"].isin(HAS_RESULT)]
    for arm, rows in search.groupby("arm"):
        top = rows.sort_values("final_val_acc", ascending=False).iloc[0]
        final = trials[(trials["phase"] == Phase.FINAL) & (trials["arm"] == arm)]
        final_test = final["test_acc"].dropna()
        best[arm] = {
            "trial": int(top["number"]),
            "params": top["params"] or {},
            "val_acc": float(top["final_val_acc"]),
            "test_acc": float(top["test_acc"]) if top["test_acc"] == top["test_acc"] else None,
            "final_test_acc_mean": float(final_test.mean()) if len(final_test) else None,
            "final_n": int(len(final_test)),
        }
    factors = dict(zip(trials["arm"], trials["arm_factors"], strict=True))
    best = {arm: best[arm] for arm in arm_order({a: factors[a] for a in best}, config.space)}
    return StudySummary(config.name, config.storage, counts, best, seconds)


def _print_summary(summary: StudySummary, config: StudyConfig, out) -> None:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
    print(f"\nstudy '{summary.name}' done in {summary.seconds / 60:.1f} min: {counts}", file=out)
    if summary.best:
        print(
            "best per arm (search phase: val_acc is optimistic, selected on validation):", file=out
        )
        width = max(len(a) for a in summary.best)
        for arm, b in summary.best.items():
            params = ", ".join(f"{k}={_short(v)}" for k, v in b["params"].items())
            final = (
                f"  final test {b['final_test_acc_mean']:.2%} (n={b['final_n']})"
                if b["final_test_acc_mean"] is not None
                else ""
            )
            print(f"  {arm:<{width}}  val {b['val_acc']:.2%}{final}  [{params}]", file=out)
    print(f"results:   {mask_password(config.storage)} (study '{config.name}')", file=out)
    print(f"dashboard: {dashboard_command(mask_password(config.storage))}", file=out)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
