"""Whole studies: real Ray (local), real SQLite, real Optuna storage.

Most tests drive the orchestrator with hand-made curves (`study.testing`) so its decisions can be
asserted exactly; one runs the real trainer on Fashion-MNIST through `run_study.py`, as a user does.
"""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from helpers import study_config
from optuna.trial import TrialState

from study.audit import audit_study
from study.plan import StudyConfig
from study.runner import run_study
from study.store import Store
from study.testing import curve_trainer, curve_value, failing_shared_trainer
from trainers.config import TrainConfig

# in-process studies share one Ray (conftest.shared_ray)
pytestmark = pytest.mark.usefixtures("shared_ray")

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def _config(tmp_path: Path, name: str = "s", **changes) -> StudyConfig:
    values = dict(
        space="data_fraction",
        name=name,
        trials_per_arm=3,
        epochs=4,
        grace_epochs=1,
        reduction_factor=2.0,
        final_seeds=0,
        concurrency=2,
        arm_values={"mode": ["vit", "shared"], "data_fraction": [0.1, 1.0]},
    )
    values.update(changes)
    return study_config(tmp_path, **values)


def _run(config: StudyConfig, train_fn=curve_trainer, **kw):
    out = io.StringIO()
    summary = run_study(config, command="test", train_fn=train_fn, out=out, **kw)
    return summary, out.getvalue()


def _rows(db: Path, query: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(query).fetchall()


def _optuna_trials(config: StudyConfig) -> dict[str, list[optuna.trial.FrozenTrial]]:
    storage = optuna.storages.RDBStorage(config.storage)
    return {
        arm.name: optuna.load_study(
            study_name=config.optuna_study_name(arm), storage=storage
        ).trials
        for arm in config.arms()
    }


def test_budget_pruning_and_optuna_states_per_arm(tmp_path):
    config = _config(tmp_path)
    summary, output = _run(config)
    db = tmp_path / "s.db"
    trials = _rows(
        db,
        "select arm, status, epochs_run, optuna_trial_id, id, final_val_acc "
        "from bootstudy_trials order by number",
    )
    # Every arm gets exactly its share of the budget, whatever its accuracy.
    arms = sorted({t[0] for t in trials})
    assert len(arms) == 4
    assert all(sum(t[0] == arm for t in trials) == 3 for arm in arms)
    assert {t[1] for t in trials} <= {"COMPLETE", "PRUNED"}
    assert summary.counts["COMPLETE"] + summary.counts.get("PRUNED", 0) == 12
    # A trial's stored epochs match its status: only ASHA-stopped trials end before max_t.
    for _arm, status, epochs_run, *_ in trials:
        assert (epochs_run == 4) == (status == "COMPLETE")
    # Optuna: one study per arm; pruned trials are PRUNED (not COMPLETE with an epoch-1 value),
    # and every epoch's val_acc is an intermediate value equal to what our table holds.
    by_id = {t[3]: t for t in trials}
    for arm, frozen in _optuna_trials(config).items():
        assert len(frozen) == 3
        for ft in frozen:
            arm_name, status, epochs_run, _, trial_id, final = by_id[ft._trial_id]
            assert arm_name == arm
            assert (
                ft.state == {"COMPLETE": TrialState.COMPLETE, "PRUNED": TrialState.PRUNED}[status]
            )
            stored = dict(
                _rows(
                    db,
                    f"select epoch, value from bootstudy_trial_metrics "
                    f"where trial_id = {trial_id} and name = 'val_acc'",
                )
            )
            assert ft.intermediate_values == stored
            assert len(stored) == epochs_run
            if status == "COMPLETE":
                assert ft.value == pytest.approx(final)
    assert "dashboard: optuna-dashboard" in output


def test_failing_trial_is_recorded_with_traceback_and_the_study_goes_on(tmp_path):
    config = _config(
        tmp_path, trials_per_arm=2, arm_values={"mode": ["vit", "shared"], "data_fraction": [0.1]}
    )
    summary, output = _run(config, train_fn=failing_shared_trainer)
    db = tmp_path / "s.db"
    rows = _rows(db, "select arm, status, error, epochs_run from bootstudy_trials")
    shared = [r for r in rows if r[0].startswith("mode=shared")]
    vit = [r for r in rows if r[0].startswith("mode=vit")]
    assert [r[1] for r in shared] == ["FAILED", "FAILED"]
    assert all("NonFiniteLoss" in r[2] and "Traceback" in r[2] for r in shared)
    assert all("epoch 2, step 5" in r[2] for r in shared)
    assert all(r[3] == 1 for r in shared)  # the epoch before the failure is kept
    assert {r[1] for r in vit} <= {"COMPLETE", "PRUNED"} and len(vit) == 2
    assert _rows(db, "select status from bootstudy_studies") == [("FINISHED",)]
    states = _optuna_trials(config)
    assert all(ft.state == TrialState.FAIL for ft in states["mode=shared,data_fraction=0.1"])
    assert "FAILED" in output


def test_an_identical_second_study_reuses_every_completed_trial(tmp_path):
    # No pruning (grace = max epochs), so every trial completes and is reusable.
    first = _config(tmp_path, name="first", grace_epochs=4, trials_per_arm=2)
    _run(first)
    second = _config(tmp_path, name="second", grace_epochs=4, trials_per_arm=2)
    summary, _ = _run(second)
    assert summary.counts == {"REUSED": 8}
    db = tmp_path / "s.db"
    pairs = _rows(
        db,
        """
        select r.config_hash = o.config_hash, r.final_val_acc = o.final_val_acc,
               (select count(*) from bootstudy_trial_metrics m where m.trial_id = r.id),
               (select count(*) from bootstudy_trial_metrics m where m.trial_id = o.id)
        from bootstudy_trials r join bootstudy_trials o on r.reused_from = o.id""",
    )
    assert len(pairs) == 8
    assert all(p[0] == 1 and p[1] == 1 and p[2] == p[3] > 0 for p in pairs)
    # Optuna sees the reused trials as COMPLETE with the original's values and curve.
    for frozen in _optuna_trials(second).values():
        assert [ft.state for ft in frozen] == [TrialState.COMPLETE] * 2
        assert all(len(ft.intermediate_values) == 4 for ft in frozen)


def test_final_phase_reruns_each_arms_best_config_on_new_seeds(tmp_path):
    config = _config(
        tmp_path,
        trials_per_arm=2,
        final_seeds=2,
        arm_values={"mode": ["vit"], "data_fraction": [0.1, 1.0]},
    )
    summary, _ = _run(config)
    db = tmp_path / "s.db"
    finals = _rows(
        db,
        "select arm, seed, status, params_json, test_acc from bootstudy_trials "
        "where phase = 'final' order by arm, seed",
    )
    assert [(f[0], f[1], f[2]) for f in finals] == [
        ("mode=vit,data_fraction=0.1", 1000, "COMPLETE"),
        ("mode=vit,data_fraction=0.1", 1001, "COMPLETE"),
        ("mode=vit,data_fraction=1.0", 1000, "COMPLETE"),
        ("mode=vit,data_fraction=1.0", 1001, "COMPLETE"),
    ]
    for arm, best in summary.best.items():
        params = {json.dumps(json.loads(f[3]), sort_keys=True) for f in finals if f[0] == arm}
        assert params == {json.dumps(best["params"], sort_keys=True)}
        expected = (
            curve_value(
                TrainConfig(
                    mode="vit", lr=best["params"]["lr"], data_fraction=float(arm.split("=")[-1])
                ),
                4,
            )
            - 0.01
        )
        assert best["final_test_acc_mean"] == pytest.approx(expected)


KILLABLE_DRIVER = textwrap.dedent("""
    import sys
    from study.plan import StudyConfig
    from study.runner import run_study
    from study.testing import slow_curve_trainer
    tmp, resume = sys.argv[1], sys.argv[2] == "resume"
    config = StudyConfig(space="optimizer", name="k", preset="smoke", storage=f"sqlite:///{tmp}/s.db",
                         results_dir=tmp, trials_per_arm=4, epochs=3, grace_epochs=3,
                         final_seeds=0, concurrency=2)
    run_study(config, command="test", resume=resume, train_fn=slow_curve_trainer)
""")


@pytest.mark.slow  # ~85 s; tests/reliability/test_kills.py kills at more points, in CI
def test_resume_after_sigkill_keeps_completed_trials_and_fails_stale_ones(tmp_path):
    db = tmp_path / "s.db"
    driver = subprocess.Popen(
        [PY, "-c", KILLABLE_DRIVER, str(tmp_path), "new"],
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # kill once some trials finished and others run
            time.sleep(0.5)
            if not db.exists():
                continue
            try:
                done = _rows(db, "select count(*) from bootstudy_trials where status='COMPLETE'")
                running = _rows(db, "select count(*) from bootstudy_trials where status='RUNNING'")
            except sqlite3.OperationalError:
                continue
            if done[0][0] >= 2 and running[0][0] >= 1:
                break
        else:
            pytest.fail("the driver never reached a state worth killing")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the driver and the Ray it started
        driver.wait()
    before = _rows(
        db,
        "select id, status, final_val_acc from bootstudy_trials "
        "where status = 'COMPLETE' order by id",
    )
    stale_ids = [r[0] for r in _rows(db, "select id from bootstudy_trials where status='RUNNING'")]
    assert stale_ids

    resumed = subprocess.run(
        [PY, "-c", KILLABLE_DRIVER, str(tmp_path), "resume"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    after = _rows(db, "select id, status, final_val_acc from bootstudy_trials order by id")
    # Completed trials are neither lost nor re-run; stale ones are FAILED (stale) and re-run.
    assert [r for r in after if r[0] in {b[0] for b in before}] == before
    stale = [r for r in after if r[0] in stale_ids]
    assert all(r[1] == "FAILED" for r in stale)
    errors = _rows(
        db, f"select error from bootstudy_trials where id in ({','.join(map(str, stale_ids))})"
    )
    assert all(e[0].startswith("stale") for e in errors)
    per_arm = _rows(
        db, "select arm, count(*) from bootstudy_trials where status = 'COMPLETE' group by arm"
    )
    assert sorted(n for _, n in per_arm) == [4, 4]  # the full budget, exactly once
    duplicates = _rows(
        db,
        "select trial_id, epoch, name, count(*) from bootstudy_trial_metrics "
        "group by trial_id, epoch, name having count(*) > 1",
    )
    assert duplicates == []
    assert _rows(db, "select status from bootstudy_studies") == [("FINISHED",)]
    config = study_config(tmp_path, space="optimizer", name="k")  # the driver's, as it wrote db
    frozen = [ft for arm in _optuna_trials(config).values() for ft in arm]
    states = [ft.state for ft in frozen]
    assert states.count(TrialState.COMPLETE) == 8
    assert TrialState.RUNNING not in states
    # Optuna's FAIL trials are exactly the stale rows' trials plus asks that the killed driver
    # never started (Optuna's ask precedes our row, so a kill in between leaves no row of ours).
    linked = dict(_rows(db, "select optuna_trial_id, id from bootstudy_trials"))
    failed = {ft._trial_id for ft in frozen if ft.state == TrialState.FAIL}
    stale_optuna = {oid for oid, tid in linked.items() if tid in stale_ids}
    assert len(stale_optuna) == len(stale_ids)
    assert stale_optuna <= failed
    assert all(oid not in linked for oid in failed - stale_optuna)
    audit = audit_study(f"sqlite:///{db}", "k")
    assert audit.ok, (audit.duplicates, audit.problems)


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, str(REPO / "run_study.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--space", "nope"], "unknown search space 'nope'"),
        (
            ["--space", "data_fraction", "--storage", "foo://x"],
            "unsupported database URL 'foo://x'",
        ),
        (
            ["--space", "data_fraction", "--arm", "data_fraction=0,0.1"],
            "data_fraction must be in (0, 1]",
        ),
        (["--space", "data_fraction", "--bogus"], "unrecognized arguments: --bogus"),
        (["--space", "data_fraction", "--storage", "sqlite:////proc/nope/s.db"], "/proc/nope"),
        (["--space", "data_fraction", "--results-dir", "/proc/nope"], "cannot write results"),
        (["--space", "data_fraction", "--data-dir", "/nonexistent"], "/nonexistent"),
        (["--space", "data_fraction", "--trials", "0"], "--trials must be >= 1"),
        (["--space", "data_fraction", "--address", "127.0.0.1:1"], "cannot join the Ray cluster"),
        (["--space", "data_fraction", "--set", "seed=3"], "--set seed: the study sets this"),
        (["--space", "data_fraction", "--set", "epochs=3"], "use --epochs"),
        (["--space", "data_fraction", "--cpus-per-trial", "64"], "no Ray node can run a trial"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, message):
    db = tmp_path / "s.db"
    storage = [] if "--storage" in args else ["--storage", f"sqlite:///{db}"]
    results = [] if "--results-dir" in args else ["--results-dir", str(tmp_path / "runs")]
    done = _cli(*args, *storage, *results, "--preset", "smoke")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    if db.exists():  # at most an empty schema: no study, no trial
        assert _rows(db, "select count(*) from bootstudy_studies") == [(0,)]


def test_smoke_study_through_the_command_line(smoke_study):
    """As a user runs it: the real trainer on Fashion-MNIST, real Ray, SQLite, report at the end."""
    out, name = smoke_study["stdout"], smoke_study["name"]
    assert "dashboard: optuna-dashboard 'sqlite:///" in out
    store = Store.open(smoke_study["storage"])
    trials = store.trials_frame(name)
    metrics = store.metrics_frame(name)
    assert len(trials) == 4 and set(trials["status"]) <= {"COMPLETE", "PRUNED"}
    assert set(trials["arm"]) == {"mode=vit,data_fraction=0.02", "mode=shared,data_fraction=0.02"}
    assert (trials["status"] == "COMPLETE").sum() >= 2  # each arm's first trial can't be cut
    names = set(metrics["name"])
    assert {
        "val_acc",
        "val_acc_agent",
        "train_loss",
        "lr",
        "hint_weight",
        "epoch_seconds",
        "images_per_second",
        "loss_cls_vit",
        "loss_hint",
    } <= names
    complete = trials[trials["status"] == "COMPLETE"]
    assert complete["test_acc"].notna().all() and (complete["test_acc"] > 0.1).all()
    assert (complete["trial_seconds"] > 0).all()
    # Optuna holds the same curves: every stored val_acc is an intermediate value of its trial.
    storage = optuna.storages.RDBStorage(smoke_study["storage"])
    val = metrics[metrics["name"] == "val_acc"]
    for row in trials.itertuples():
        frozen = storage.get_trial(int(row.optuna_trial_id))
        stored = val[val["trial_id"] == row.id]
        curve = dict(zip(stored["epoch"], stored["value"], strict=True))
        assert frozen.intermediate_values == curve
        assert frozen.state.name == row.status
    study = store.get_study(name)
    assert study.status == "FINISHED" and study.code_version and study.hardware
    assert smoke_study["report"].exists() and smoke_study["report"].stat().st_size > 100_000


def test_a_study_runs_the_same_on_every_backend(storage_url, tmp_path):
    """SQLite and PostgreSQL alike: our rows and Optuna's per-arm studies agree."""
    config = _config(
        tmp_path,
        storage=storage_url,
        trials_per_arm=2,
        arm_values={"mode": ["vit", "shared"], "data_fraction": [0.1]},
    )
    summary, _ = _run(config)
    trials = Store.open(storage_url).trials_frame("s")
    assert len(trials) == 4 and set(trials["status"]) <= {"COMPLETE", "PRUNED"}
    assert sum(summary.counts.values()) == 4
    for arm, frozen in _optuna_trials(config).items():
        ours = trials[trials["arm"] == arm].set_index("optuna_trial_id")
        assert sorted(ours.index) == sorted(ft._trial_id for ft in frozen)
        for ft in frozen:
            assert ft.state.name == ours.loc[ft._trial_id, "status"]
    # The report reads the same tables with the same SQL on both backends.
    from reports import build_report

    page = build_report("s", storage_url, tmp_path / "r.html").read_text()
    assert "mode=shared,data_fraction=0.1" in page and "5. Results against the baseline" in page
    assert page.count('class="plotly-graph-div"') >= 6


def test_resume_takes_the_studys_own_settings_and_never_repeats_final_runs(tmp_path):
    config = _config(
        tmp_path,
        trials_per_arm=2,
        final_seeds=2,
        arm_values={"mode": ["vit"], "data_fraction": [0.1]},
    )
    first, _ = _run(config)
    # Resume with other settings on the command line (as `--resume` with the defaults would):
    # the stored ones win, nothing is left to run, and the final runs are not added again.
    other = _config(
        tmp_path,
        trials_per_arm=5,
        final_seeds=3,
        epochs=6,
        arm_values={"mode": ["vit", "shared"], "data_fraction": [0.1]},
        concurrency=1,
    )
    second, output = _run(other, resume=True)
    assert "with its own settings: preset smoke, 2 trial(s)/arm, 4 epochs, 1 arm(s)" in output
    assert second.counts == first.counts
    assert second.best == first.best
    db = tmp_path / "s.db"
    assert _rows(db, "select count(*) from bootstudy_trials where phase = 'final'") == [(2,)]


def test_a_trainer_that_stops_early_ends_pruned_without_breaking_the_study(tmp_path):
    from study.testing import early_stopping_trainer

    config = _config(
        tmp_path, trials_per_arm=1, arm_values={"mode": ["vit"], "data_fraction": [0.1]}
    )
    summary, _ = _run(config, train_fn=early_stopping_trainer)
    assert summary.counts == {"PRUNED": 1}
    assert _rows(tmp_path / "s.db", "select epochs_run from bootstudy_trials") == [(2,)]


def test_repeated_arm_values_make_one_arm(tmp_path):
    config = _config(tmp_path, arm_values={"mode": ["vit", "vit"], "data_fraction": [1, 1.0]})
    assert [a.name for a in config.arms()] == ["mode=vit,data_fraction=1"]


def test_the_plan_derives_each_arms_baseline_once(tmp_path):
    """The space's baseline factor values with the arm's other factors: the twin at the same
    fraction (or norm and resampling), none for a baseline itself, none without its twin."""
    config = _config(tmp_path, arm_values={"mode": ["vit", "shared"], "data_fraction": [0.1, 1]})
    assert config.facts()["baselines"] == {
        "mode=vit,data_fraction=0.1": None,
        "mode=vit,data_fraction=1": None,
        "mode=shared,data_fraction=0.1": "mode=vit,data_fraction=0.1",
        "mode=shared,data_fraction=1": "mode=vit,data_fraction=1",
    }
    design = StudyConfig(space="agent_design", name="d", preset="cpu", storage=config.storage)
    baselines = design.baselines()
    assert baselines[
        "agent_design=res_like,agent_stem=resnet_like,agent_norm=pre,resample=interp2d"
    ] == ("agent_design=base,agent_stem=vit_like,agent_norm=pre,resample=interp2d")
    assert sum(b is None for b in baselines.values()) == 2  # base/vit_like x 2 resamplings
    alone = _config(tmp_path, arm_values={"mode": ["shared"], "data_fraction": [0.1]})
    assert alone.baselines() == {"mode=shared,data_fraction=0.1": None}  # no vit twin to run
    assert StudyConfig(space="loss_weights", name="w", preset="cpu").facts() == {
        "rungs": [2, 4],
        "baselines": {"mode=shared": None},
        "main_view": "arms",
    }


def test_resume_refuses_a_study_whose_trials_predate_a_trainer_field(tmp_path):
    # A study begun by a bootstudy whose TrainConfig lacked a field (here: before the hint was
    # summed over blocks): resumed, its new trials would train another method than its old ones.
    from trainers.errors import ConfigError

    config = _config(tmp_path, arm_values={"mode": ["vit"], "data_fraction": [0.1]})
    _run(config)
    db = tmp_path / "s.db"
    with sqlite3.connect(db) as conn:
        for trial_id, text in conn.execute("select id, config_json from bootstudy_trials"):
            stored = json.loads(text)
            stored.pop("hint_reduce")
            conn.execute(
                "update bootstudy_trials set config_json = ? where id = ?",
                (json.dumps(stored), trial_id),
            )
    before = _rows(db, "select count(*) from bootstudy_trials")
    with pytest.raises(ConfigError, match="had no hint_reduce: resumed, its remaining trials"):
        _run(config, resume=True)
    assert _rows(db, "select count(*) from bootstudy_trials") == before
