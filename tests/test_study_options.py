"""run_study.py's front-door options: --config study.yaml, --dry-run's time estimate, and the
study ETA the live view prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import run_study
from study.plan import StudyConfig
from study.progress import eta_seconds, progress_text
from study.runner import weights_dir
from trainers.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _resolved(tmp_path: Path, yaml_text: str, *flags: str):
    path = tmp_path / "study.yaml"
    path.write_text(yaml_text)
    args = run_study.parse_args(["--config", str(path), *flags])
    config, _ = run_study.resolve(args)
    return args, config


def test_a_yaml_file_gives_every_option_and_flags_win(tmp_path):
    args, config = _resolved(
        tmp_path,
        "space: data_fraction\npreset: smoke\ntrials: 3\nepochs: 2\nconcurrency: 1\n"
        "set: {label_smoothing: 0.1}\narm: {mode: [vit, shared], data_fraction: [0.02]}\n"
        "no_save_weights: true\ntensorboard: true\ndry-run: true\n",
        "--trials",
        "2",
    )
    assert config.trials_per_arm == 2  # the flag over the file's 3
    assert (config.epochs, config.concurrency, config.preset) == (2, 1, "smoke")
    assert config.overrides == {"label_smoothing": 0.1}
    assert config.arm_values == {"mode": ["vit", "shared"], "data_fraction": [0.02]}
    assert config.save_weights is False and config.tensorboard is True and args.dry_run


def test_every_option_of_the_command_line_is_a_yaml_key(tmp_path):
    parser = run_study.build_parser()
    keys = [
        a.option_strings[0].lstrip("-").replace("-", "_")
        for a in parser._actions
        if a.option_strings and a.dest not in ("help", "config")
    ]
    assert {"space", "storage", "trials", "set", "arm", "base", "resume", "no_save_weights"} <= set(
        keys
    )
    for key in keys:  # each one is accepted (with its own default, or a valid value)
        action = next(
            a for a in parser._actions if a.option_strings[:1] == [f"--{key}".replace("_", "-")]
        )
        value = (
            action.default
            if action.default not in (None, [])
            else {"set": [], "arm": []}.get(key, "x")
        )
        if action.nargs == 0:
            value = False
        elif action.type in (int, float):
            value = 1
        elif action.choices:
            value = list(action.choices)[0]
        run_study.yaml_options(parser, str(_write(tmp_path, f"{key}: {value!r}\n")))


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "o.yaml"
    path.write_text(text.replace("'", '"'))
    return path


@pytest.mark.parametrize(
    "text, message",
    [
        ("space: data_fraction\ntrails: 3\n", "unknown option 'trails'"),
        ("trials: three\n", "option 'trials' must be an integer"),
        ("trials: 2.5\n", "option 'trials' must be an integer"),
        ("preset: huge\n", "option 'preset': 'huge' is not one of auto, smoke, cpu, gpu"),
        ("tensorboard: 1\n", "option 'tensorboard' must be true or false"),
        ("set: 3\n", "option 'set' must be a mapping or a list of KEY=VALUE"),
        ("- a\n- b\n", "must be a mapping of option: value"),
        ("space: [unclosed\n", "is not valid YAML"),
    ],
)
def test_a_bad_yaml_file_is_one_line_and_exit_2(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        run_study.parse_args(["--config", str(path)])
    db = tmp_path / "s.db"
    done = subprocess.run(
        [sys.executable, "run_study.py", "--config", str(path), "--storage", f"sqlite:///{db}"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert not db.exists()


def test_the_dry_run_estimates_wall_time_from_steps_timed_here(tmp_path):
    done = subprocess.run(
        [sys.executable, "run_study.py", "--space", "data_fraction", "--preset", "smoke",
         "--arm", "mode=vit,shared", "--final-seeds", "1", "--dry-run",
         "--storage", f"sqlite:///{tmp_path / 's.db'}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    vit = float(out.split("mode=vit,data_fraction=0.02: ")[1].split(" ms/step")[0])
    shared = float(out.split("mode=shared,data_fraction=0.02: ")[1].split(" ms/step")[0])
    assert 0 < vit < shared  # shared trains the ViT and the agent: a dearer step
    assert "estimated wall time here: at most" in out and "for 6 trial(s)" in out
    assert not (tmp_path / "s.db").exists()  # a dry run writes nothing


def test_the_study_eta_is_the_rate_so_far():
    assert eta_seconds(0, 10, 60.0) is None
    assert eta_seconds(2, 10, 60.0) == 240.0  # 30 s per trial, 8 left
    assert progress_text(2, 10, 60.0) == "2/10, 1.0 min, ETA 4 min (from 2 trials)"
    assert progress_text(1, 48, 30.0) == "1/48, 0.5 min, ETA 24 min (from 1 trial)"
    assert progress_text(10, 10, 600.0) == "10/10, 10.0 min"
    assert progress_text(0, 10, 5.0) == "0/10, 0.1 min"


def test_weights_never_go_where_the_database_is(tmp_path):
    config = StudyConfig(
        space="data_fraction",
        name="x",
        preset="smoke",
        storage=f"sqlite:///{tmp_path / 'weights' / 'x' / 's.db'}",
        results_dir=str(tmp_path),
    )
    with pytest.raises(ConfigError, match="would hold the database"):
        weights_dir(config)
