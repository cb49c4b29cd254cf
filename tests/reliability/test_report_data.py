"""The report shows every arm, short studies' costs and readable numbers.

Before: "Best so far" drew an arm with one completed trial as an invisible one-point line, a study
of a few minutes cost "0.0 trial-hours", and the best configurations printed 16-digit floats.
"""

from __future__ import annotations

import numpy as np
from optuna.distributions import FloatDistribution

from reports import sections
from reports.load import load_study
from reports.synthetic import write_study
from study.store import Store

LR = 0.000619238472916


def _trial(mode: str, lr: float, acc: float) -> dict:
    curve = np.linspace(acc / 2, acc, 3)
    return {
        "arm_json": {"mode": mode, "data_fraction": 0.1}, "phase": "search",
        "status": "COMPLETE", "params": {"lr": lr}, "seed": 0, "epochs_run": 3,
        "best_val_acc": float(curve.max()), "final_val_acc": float(curve[-1]), "test_acc": None,
        "trial_seconds": 40.0, "curves": {"val_acc": curve},
    }  # fmt: skip


def test_one_trial_arms_short_costs_and_float_digits(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    trials = [_trial("vit", LR, 0.6)]  # this arm has one completed trial
    trials += [_trial("shared", lr, acc) for lr, acc in ((1e-3, 0.5), (2e-3, 0.7), (5e-4, 0.6))]
    write_study(
        url, "s", trials, space="data_fraction",
        config={"epochs": 3, "grace_epochs": 1, "reduction_factor": 3,
                "arm_factors": ["mode", "data_fraction"]},
        distributions={"lr": FloatDistribution(1e-4, 1e-2, log=True)},
    )  # fmt: skip
    with Store(url) as store:
        study = load_study(store, "s")
    search = sections.search_diagnostics(study)
    (best_so_far,) = [p for p in search.parts if getattr(p, "layout", None) and
                      p.layout.title.text == "Best so far"]  # fmt: skip
    vit = [t for t in best_so_far.data if "vit" in t.name]
    assert len(vit) == 1 and len(vit[0].y) == 1 and "markers" in vit[0].mode
    summary = sections.summary(study)
    assert "took 2.7 min of trial time" in summary.caption  # 4 x 40 s, not "0.0 trial-hours"
    assert sections.cost(study).caption.startswith("2.7 min of trial time in all")
    body = "".join(p for p in summary.parts if isinstance(p, str))
    assert "lr=0.000619" in body and "0.00061923" not in body
