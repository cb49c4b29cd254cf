"""A retried trial records its earlier failures.

Before: with `--retries 1`, a trial that raised and then completed on its retry kept no trace of
its failure (its row: COMPLETE, no error), so a flaky node or a transient fault went unseen.
"""

from __future__ import annotations

from conftest import Driver

from study.audit import audit_study
from study.store import Store


def test_a_trial_that_failed_then_completed_on_retry_keeps_its_failure(tmp_path):
    storage = f"sqlite:///{tmp_path / 's.db'}"
    driver = Driver(
        storage, tmp_path, "s", "--trainer", "flaky", "--seconds-per-epoch", "0",
        "--trials", "4", "--modes", "vit", "--extra", "retries=1",
    )  # fmt: skip
    code, _, err = driver.wait()
    assert code == 0, err[-3000:]
    with Store(storage) as store:
        trials = store.trials_frame("s", parsed=True)
    assert set(trials["status"]) == {"COMPLETE"}  # every retry succeeded
    faulty = [(p["lr"] > 1e-3 or p["weight_decay"] > 0.02) for p in trials["params"]]
    assert any(faulty)  # 4 TPE draws miss the faulty corner about 1 time in 80
    for was_faulty, error in zip(faulty, trials["error"], strict=True):
        if not was_faulty:
            assert error is None or error != error  # NaN: none
            continue
        assert error.startswith("attempt 1 failed, retried:"), error[:300]
        assert error.count("RuntimeError: a flaky trial: fails once") == 1, error
    audit = audit_study(storage, "s")
    assert audit.ok, (audit.duplicates, audit.problems)
