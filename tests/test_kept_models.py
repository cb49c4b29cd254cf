"""The trained models are kept: a study's final runs save their best-validation weights, which
load into a ViT and reproduce their test accuracy; TensorBoard files and the CSV export find them.

A real study (the real trainer on Fashion-MNIST, real Ray, SQLite), started from Python the way
the README shows: `run_study(StudyConfig(...))`, no `command`.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pandas as pd
import pytest

from reports.export import export_study
from study.plan import StudyConfig
from study.runner import run_study, weights_dir
from study.store import Store
from trainers.weights import load_weights, measure_test_accuracy

# a real two-trial study: 40 s on an idle 2-core machine, over two minutes under load
pytestmark = [pytest.mark.usefixtures("shared_ray"), pytest.mark.slow]


def _scalars(event_file: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} of a TensorBoard event file (TFRecord frames, tensorboardX protos)."""
    from tensorboardX.proto import event_pb2

    data, at, out = event_file.read_bytes(), 0, {}
    while at < len(data):
        (length,) = struct.unpack("<Q", data[at : at + 8])
        event = event_pb2.Event.FromString(data[at + 12 : at + 12 + length])
        at += 12 + length + 4
        for value in event.summary.value:
            out.setdefault(value.tag, {})[event.step] = value.simple_value
    return out


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("kept")
    config = StudyConfig(
        space="data_fraction",
        name="kept",
        preset="smoke",
        storage=f"sqlite:///{tmp / 's.db'}",
        results_dir=str(tmp),
        arm_values={"mode": ["vit"]},
        trials_per_arm=1,
        epochs=2,
        grace_epochs=2,
        final_seeds=1,
        concurrency=2,
        tensorboard=True,
    )
    out = io.StringIO()
    run_study(config, out=out)  # the documented Python API: no command
    return {"config": config, "tmp": tmp, "out": out.getvalue()}


def test_a_final_run_keeps_weights_that_reproduce_its_test_accuracy(study):
    config = study["config"]
    with Store.open_existing(config.storage) as store:
        trials = store.trials_frame(config.name, parsed=True)
        record = store.get_study(config.name)
    final = trials[trials["phase"] == "final"].iloc[0]
    search = trials[trials["phase"] == "search"].iloc[0]
    folder = Path(final["result"]["weights_dir"])
    assert folder == weights_dir(config) / f"trial-{final['number']}"
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "vit.pt"]
    assert "weights_dir" not in (search["result"] or {})  # search trials keep none
    saved = json.loads((folder / "config.json").read_text())
    vit, cfg = load_weights(folder)
    assert (
        measure_test_accuracy(vit, cfg) == saved["test_acc"] == final["result"]["weights_test_acc"]
    )
    assert saved["val_acc"] == final["best_val_acc"]  # the best-validation epoch's weights
    if saved["epoch"] == final["epochs_run"]:  # best at the last epoch: the run's own test_acc
        assert saved["test_acc"] == final["test_acc"]
    # started from Python: the stored command is the equivalent command line
    assert record.command.startswith("run_study.py --space data_fraction --study kept")


def test_tensorboard_files_hold_every_trials_curve(study):
    files = sorted(Path(study["tmp"], "ray").rglob("events.out.tfevents.*"))
    assert len(files) == 2  # one search trial, one final run
    for path in files:
        scalars = _scalars(path)
        assert sorted(scalars["ray/tune/val_acc"]) == [1, 2]  # one point per epoch
        assert 0 < scalars["ray/tune/result/test_acc"][2] <= 1  # the result at the last epoch


def test_csv_export_lists_trials_params_and_weights(study, tmp_path):
    config = study["config"]
    trials_csv, metrics_csv = export_study(config.name, config.storage, "csv", tmp_path)
    trials = pd.read_csv(trials_csv)
    metrics = pd.read_csv(metrics_csv)
    assert list(trials["phase"]) == ["search", "final"]
    assert trials["param_lr"].notna().all() and set(trials["arm_mode"]) == {"vit"}
    assert trials["weights_dir"].isna().tolist() == [True, False]
    val = metrics[metrics["name"] == "val_acc"]
    assert sorted(val["trial_number"]) == [0, 0, 1, 1]  # 2 epochs per trial
    parquet = export_study(config.name, config.storage, "parquet", tmp_path)[0]
    assert pd.read_parquet(parquet)["test_acc"].tolist() == pytest.approx(
        trials["test_acc"].tolist(), nan_ok=True
    )


def test_the_report_links_each_final_runs_weights(study, tmp_path):
    from reports import build_report

    config = study["config"]
    with Store.open_existing(config.storage) as store:
        trials = store.trials_frame(config.name, parsed=True)
    final = trials[trials["phase"] == "final"].iloc[0]
    folder = Path(final["result"]["weights_dir"])
    page = build_report(config.name, config.storage, tmp_path / "r.html").read_text()
    assert f'<a href="{folder.as_uri()}/">{folder}</a>' in page
    assert f"trial {final['number']} (" in page
