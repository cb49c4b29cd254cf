"""The trainer's command line as a person uses it: every option's choices in --help, a closing
table with the test accuracy, and --save keeping weights that reproduce it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainers.__main__ import build_parser, choices

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_the_registries_names_without_importing_torch():
    from trainers.agent import AGENT_DESIGNS, AGENT_STEMS
    from trainers.config import MODEL_PRESETS
    from trainers.datasets import DATASETS

    assert choices("dataset") == tuple(DATASETS)
    assert choices("agent_design") == tuple(AGENT_DESIGNS)
    assert choices("agent_stem") == AGENT_STEMS
    assert choices("preset") == tuple(MODEL_PRESETS)
    code = "import sys, trainers.__main__ as m; m.build_parser(); print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr


def test_every_option_with_a_closed_set_of_values_shows_it():
    text = build_parser().format_help()
    for option in ("--preset {tiny,mid", "--dataset {fashion_mnist,", "--agent-stem {vit_like,"):
        assert option in text
    assert "--agent-design {base,res_like" in text
    bare = [line.split()[0] for line in text.splitlines() if line.strip().split()[1:2] == ["V"]]
    assert bare == ["--data-dir", "--device"]  # open-ended: a folder, cuda:N


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("cli") / "my-vit"
    done = subprocess.run(
        [sys.executable, "-m", "trainers", "--mode", "vit", "--fraction", "0.01", "--epochs",
         "2", "--max-eval-images", "300", "--seed", "0", "--save", str(folder)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return {"folder": folder, "stderr": done.stderr, "line": json.loads(done.stdout)}


def test_the_closing_table_shows_the_test_accuracy_of_the_json_line(trained):
    result = trained["line"]["result"]
    table = trained["stderr"]
    assert f"test accuracy             {result['test_acc']:.2%}" in table
    assert f"best validation accuracy  {result['best_val_acc']:.2%}" in table
    assert "epoch     loss  val_acc" in table  # the per-epoch lines stay


def test_saved_weights_load_and_reproduce_their_test_accuracy(trained):
    from trainers.weights import load_weights, measure_test_accuracy

    saved = json.loads((trained["folder"] / "config.json").read_text())
    assert (
        saved["networks"] == ["vit"]
        and saved["val_acc"] == trained["line"]["result"]["best_val_acc"]
    )
    vit, cfg = load_weights(trained["folder"])
    assert cfg.to_dict() == trained["line"]["config"]
    assert measure_test_accuracy(vit, cfg) == saved["test_acc"]
    assert f"test {saved['test_acc']:.2%}" in trained["stderr"]


def test_save_to_a_file_or_a_database_is_one_line_and_exit_2(tmp_path):
    target = tmp_path / "studies.db"
    target.write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "trainers", "--epochs", "1", "--save", str(target)],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: --save expects a directory for the weights, got '{target}'"
    ]
    assert target.read_text() == ""
