"""SIGKILL of the driver at several points of a study, and trials that raise or diverge: after a
resume, no completed result is lost or duplicated and our tables agree with Optuna's."""

from __future__ import annotations

import signal

import pytest
from conftest import Driver, wait_for

from study.audit import audit_study, completed_results
from study.store import Store


def _trials(storage: str):
    with Store(storage) as store:
        return store.trials_frame("s")


def _n(trials, status: str) -> int:
    return int((trials["status"] == status).sum())


KILL_POINTS = {
    "before-the-first-trial-ends": lambda t: _n(t, "RUNNING") and not _n(t, "COMPLETE"),
    "mid-search": lambda t: _n(t, "COMPLETE") >= 2 and _n(t, "RUNNING"),
    "during-final-seeds": lambda t: _n(t[t["phase"] == "final"], "RUNNING"),
}


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_sigkill_then_resume_loses_and_duplicates_nothing(tmp_path, point):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    options = ("--final-seeds", "2", "--seconds-per-epoch", "0.6")
    driver = Driver(storage, tmp_path, "s", *options)
    wait_for(lambda: KILL_POINTS[point](_trials(storage)), timeout=240, what=point)
    with Store(storage) as store:
        before = completed_results(store, "s")
    driver.kill()
    driver.wait()
    driver.signal(signal.SIGKILL, group=True)  # and the Ray it started
    # The kill during resume itself: the first resume is killed as soon as it runs a trial.
    resumed = Driver(storage, tmp_path, "s", "--resume", "--seconds-per-epoch", "0.6")
    wait_for(lambda: _n(_trials(storage), "RUNNING") > 0 and _n(_trials(storage), "FAILED"),
             timeout=240, what="the resume to run a trial")  # fmt: skip
    resumed.kill()
    resumed.wait()
    code, _, err = Driver(storage, tmp_path, "s", "--resume", "--seconds-per-epoch", "0").wait()
    assert code == 0, err[-3000:]
    with Store(storage) as store:
        after = completed_results(store, "s")
        assert store.get_study("s").status == "FINISHED"
    assert {k: after.get(k) for k in before} == before  # nothing completed is lost or changed
    trials = _trials(storage)
    search = trials[(trials["phase"] == "search") & (trials["status"] == "COMPLETE")]
    final = trials[(trials["phase"] == "final") & (trials["status"] == "COMPLETE")]
    assert len(search) == 6 and len(final) == 4  # 2 arms x 3 trials; 2 arms x 2 seeds, once each
    audit = audit_study(storage, "s")
    assert audit.ok, (audit.duplicates, audit.problems)


@pytest.mark.parametrize("trainer", ["raising", "nan"])
def test_trials_that_raise_or_diverge_are_failed_with_their_error(tmp_path, trainer):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    code, _, err = Driver(
        storage, tmp_path, "s", "--trainer", trainer, "--seconds-per-epoch", "0", "--trials", "4",
        "--modes", "vit",
    ).wait()  # fmt: skip
    assert code == 0, err[-3000:]
    trials = _trials(storage)
    failed = trials[trials["status"] == "FAILED"]
    assert len(failed) >= 1 and failed["error"].str.len().gt(0).all()
    expected = "NonFiniteLoss" if trainer == "nan" else "a trial that raises"
    assert failed["error"].str.contains(expected).all()
    audit = audit_study(storage, "s")
    assert audit.ok, (audit.duplicates, audit.problems)
