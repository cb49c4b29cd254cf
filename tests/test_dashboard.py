"""optuna-dashboard on a bootstudy database: it lists our per-arm studies and shows what we stored.

A tiny study runs in-process (real Ray, real Optuna, real ASHA; `study.testing.curve_trainer` in
place of training), then the real ``optuna-dashboard`` server is started on its SQLite file and
its JSON API (the routes of ``optuna_dashboard/_app.py``) is compared with our tables.
"""

from __future__ import annotations

import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from run_study import write_report
from study.plan import StudyConfig
from study.runner import run_study
from study.testing import curve_trainer

# in-process studies share one Ray (conftest.shared_ray)
pytestmark = pytest.mark.usefixtures("shared_ray")

DASHBOARD = Path(sys.executable).with_name("optuna-dashboard")
STARTUP_SECONDS = 60  # the server imports optuna, bottle and plotly before it listens
STATE_OF = {"COMPLETE": "Complete", "PRUNED": "Pruned", "FAILED": "Fail"}  # ours -> dashboard's
TERMINAL: dict[str, str] = {}  # study name -> what run_study printed
REPORT: dict[str, Path | None] = {}  # study name -> the report write_report wrote


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(base: str, path: str) -> dict:
    with urllib.request.urlopen(base + path, timeout=10) as response:
        assert response.status == 200, f"GET {path}: HTTP {response.status}"
        return json.loads(response.read())


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> tuple[StudyConfig, str]:
    """optimizer/smoke: 2 arms x 6 trials x 4 epochs, ASHA grace 1, one trial at a time.

    One at a time makes the order, hence TPE's suggestions and ASHA's cuts, deterministic; with
    curve_trainer's lr-driven plateaus some trials fall below a rung's cut and are PRUNED.
    """
    tmp = tmp_path_factory.mktemp("dashboard")
    config = StudyConfig(
        space="optimizer",
        name="dash",
        preset="smoke",
        storage=f"sqlite:///{tmp / 'study.db'}",
        trials_per_arm=6,
        epochs=4,
        grace_epochs=1,
        final_seeds=0,
        concurrency=1,
        results_dir=str(tmp),
    )
    terminal = io.StringIO()
    summary = run_study(
        config,
        command="pytest tests/test_dashboard.py",
        train_fn=curve_trainer,
        out=terminal,
    )
    assert sum(summary.counts.values()) == 12, summary.counts
    TERMINAL[config.name] = terminal.getvalue()
    REPORT[config.name] = write_report(config, out=io.StringIO())  # and link the arms to it
    return config, config.storage


@pytest.fixture(scope="module")
def dashboard(finished_study) -> Iterator[str]:
    """The real optuna-dashboard on the study's database; yields its base URL."""
    _, storage = finished_study
    port = _free_port()
    log = Path(storage.removeprefix("sqlite:///")).with_name("dashboard.log")
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(DASHBOARD), storage, "--host", "127.0.0.1", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if server.poll() is not None:
                pytest.fail(f"optuna-dashboard exited {server.returncode}:\n{log.read_text()}")
            try:
                _get(base, "/api/meta")
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"optuna-dashboard did not answer in {STARTUP_SECONDS} s:\n"
                        f"{log.read_text()}"
                    )
                time.sleep(0.2)
        yield base
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _our_trials(storage: str, study_name: str) -> dict[int, dict]:
    """Our search trials by Optuna trial id: status and val_acc per epoch, read with plain SQL."""
    engine = sa.create_engine(storage)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT t.id, t.optuna_trial_id, t.status, t.epochs_run, t.optuna_study_name "
                    "FROM bootstudy_trials t JOIN bootstudy_studies s ON s.id = t.study_id "
                    "WHERE s.name = :name AND t.optuna_trial_id IS NOT NULL"
                ),
                {"name": study_name},
            ).all()
            metrics = conn.execute(
                sa.text(
                    "SELECT trial_id, epoch, value FROM bootstudy_trial_metrics "
                    "WHERE name = 'val_acc'"
                )
            ).all()
    finally:
        engine.dispose()
    curves: dict[int, dict[int, float]] = {}
    for trial_id, epoch, value in metrics:
        curves.setdefault(trial_id, {})[epoch] = value
    return {
        optuna_id: {
            "status": status,
            "epochs_run": epochs_run,
            "study": optuna_study,
            "val_acc": curves.get(trial_id, {}),
        }
        for trial_id, optuna_id, status, epochs_run, optuna_study in rows
    }


def _arm_studies(base: str) -> list[dict]:
    """The dashboard's studies of our study "dash" (the writer test adds one of its own)."""
    return [
        s
        for s in _get(base, "/api/studies")["study_summaries"]
        if s["study_name"].startswith("dash/")
    ]


def test_dashboard_lists_one_study_per_arm(finished_study, dashboard):
    config, _ = finished_study
    listed = _arm_studies(dashboard)
    assert sorted(s["study_name"] for s in listed) == sorted(
        f"dash/{arm.name}" for arm in config.arms()
    )
    assert all(s["directions"] == ["maximize"] for s in listed)


def test_dashboard_shows_our_states_and_curves(finished_study, dashboard):
    config, storage = finished_study
    ours = _our_trials(storage, config.name)
    listed = _arm_studies(dashboard)
    states_seen: set[str] = set()
    for study in listed:
        detail = _get(dashboard, f"/api/studies/{study['study_id']}")
        trials = detail["trials"]
        assert len(trials) == config.trials_per_arm
        for trial in trials:
            mine = ours[trial["trial_id"]]
            assert mine["study"] == study["study_name"]
            assert trial["state"] == STATE_OF[mine["status"]], (trial["number"], mine)
            shown = {v["step"]: v["value"] for v in trial["intermediate_values"]}
            # every epoch we stored, the last (ASHA's stopping one) included, and nothing else
            assert shown == pytest.approx(mine["val_acc"]), (study["study_name"], trial["number"])
            assert len(shown) == mine["epochs_run"]
            if mine["status"] == "COMPLETE":
                assert trial["values"] == pytest.approx([mine["val_acc"][config.epochs]])
            states_seen.add(mine["status"])
    assert {"COMPLETE", "PRUNED"} <= states_seen, states_seen


def test_dashboard_names_the_objective_and_leads_back_to_the_study(finished_study, dashboard):
    """Not "Objective 0": the arm's study names val_acc, says it is a fraction, and names its
    bootstudy study, arm and report file."""
    config, _ = finished_study
    report = REPORT[config.name]
    assert report is not None and report.exists()
    arms = {f"dash/{arm.name}": arm.name for arm in config.arms()}
    for study in _arm_studies(dashboard):
        detail = _get(dashboard, f"/api/studies/{study['study_id']}")
        assert detail["objective_names"] == ["val_acc"]
        attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
        assert attrs["bootstudy_study"] == "dash"
        assert attrs["bootstudy_arm"] == arms[study["study_name"]]
        assert attrs["bootstudy_report"] == str(report)
        assert "fraction" in attrs["objective"] and "%" in attrs["objective"]


def test_one_trial_has_one_number_everywhere(finished_study, dashboard):
    """The study's trial number is what the terminal prints, what Ray names the trial's
    directory, and what the dashboard shows as `bootstudy_trial` (issue #17: a trial had four
    names: `trial 2`, `Trial 0 (trial_id=3)`, `bootstudy_trial_id=3`, `_trial_eac73187_3`)."""
    config, storage = finished_study
    engine = sa.create_engine(storage)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT t.number, t.arm, t.optuna_trial_id, t.status, t.epochs_run "
                    "FROM bootstudy_trials t JOIN bootstudy_studies s ON s.id = t.study_id "
                    "WHERE s.name = 'dash'"
                )
            ).all()
    finally:
        engine.dispose()
    ours = {number: (arm, optuna_id, status, epochs) for number, arm, optuna_id, status, epochs
            in rows}  # fmt: skip
    # the terminal: "search trial   N <arm> ... ep E/4  val 12.3%  STATUS"
    ended = {
        int(m.group(1)): (m.group(2), int(m.group(3)), m.group(4))
        for m in re.finditer(
            r"search trial +(\d+) (\S+) .*?ep (\d+)/4 +val +\d+\.\d%  (\w+)",
            TERMINAL[config.name],
        )
    }
    assert ended == {n: (arm, epochs, status) for n, (arm, _, status, epochs) in ours.items()}
    # Ray's trial directories
    dirs = {p.name for p in Path(config.results_dir, "ray").glob("*/trial_*") if p.is_dir()}
    assert dirs == {f"trial_{n}" for n in ours}
    # the dashboard
    shown = {}
    for study in _arm_studies(dashboard):
        for trial in _get(dashboard, f"/api/studies/{study['study_id']}")["trials"]:
            attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
            shown[trial["trial_id"]] = int(attrs["bootstudy_trial"])
    assert shown == {optuna_id: n for n, (_, optuna_id, _, _) in ours.items()}


def test_dashboard_answers_while_a_writer_writes(finished_study, dashboard):
    """WAL: the server reads while another connection writes (optuna-dashboard issue #545)."""
    import optuna

    from study.engine import optuna_storage

    _, storage = finished_study
    name = "dash-writer"  # its own study: the other tests' view of "dash/<arm>" stays as stored
    optuna.create_study(study_name=name, storage=optuna_storage(storage), direction="maximize")
    study_id = next(
        s["study_id"]
        for s in _get(dashboard, "/api/studies")["study_summaries"]
        if s["study_name"] == name
    )
    before = len(_get(dashboard, f"/api/studies/{study_id}")["trials"])
    writes, written, failures = 30, [], []

    def write() -> None:
        try:
            study = optuna.load_study(study_name=name, storage=optuna_storage(storage))
            for i in range(writes):
                trial = study.ask()
                for step in range(1, 4):
                    trial.report(0.1 * step + i * 1e-3, step)
                study.tell(trial, 0.5)
                written.append(trial.number)
        except Exception as exc:  # surfaced below: a thread's exception would be lost
            failures.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    reads = 0
    while writer.is_alive() or reads == 0:
        _get(dashboard, f"/api/studies/{study_id}")  # HTTP 200 with JSON every time
        reads += 1
    writer.join()
    assert not failures, failures
    assert len(written) == writes
    deadline = time.monotonic() + 30  # the dashboard caches trials briefly
    while len(_get(dashboard, f"/api/studies/{study_id}")["trials"]) != before + writes:
        assert time.monotonic() < deadline, "the dashboard never showed the new trials"
        time.sleep(0.5)


def test_live_lines_say_what_they_show():
    """Labelled accuracy, the phase, epochs of the budget, and a final run's test accuracy
    (the old lines read `running 2: #0 ep1 23.0%` and gave final runs' val accuracy only)."""
    from study.live import LiveView

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    live = LiveView(out, total=2)
    search = {"number": 2, "arm": "mode=vit", "params": {"lr": 0.001}, "phase": "search",
              "epochs": 10}  # fmt: skip
    live.event("start", search)
    live.event("epoch", {**search, "epoch": 3, "val_acc": 0.23})
    assert out.getvalue().endswith("running 1: trial 2 ep 3/10 val 23.0%")
    final = {"number": 7, "arm": "mode=shared", "params": {}, "phase": "final", "epochs": 10}
    live.event("end", {**final, "epoch": 10, "val_acc": 0.25, "test_acc": 0.241,
                       "status": "COMPLETE"})  # fmt: skip
    line = out.getvalue().split("\r\x1b[2K")[-2]
    assert re.match(r" final trial +7 mode=shared +ep 10/10 +val 25\.0%  test 24\.1%  COMPLETE "
                    r"\[1/2, .*ETA", line), line  # fmt: skip
