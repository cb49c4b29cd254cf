"""The command lines explain themselves: every option with its choices, default and reason, and
the package installs them as console scripts."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import typing
import zipfile
from pathlib import Path

import pytest

from search_spaces import list_spaces
from trainers.cli import ArgParser, add_dataclass_options, field_comments
from trainers.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent


def _help(*command: str) -> str:
    done = subprocess.run(
        [sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return " ".join(done.stdout.split())  # argparse wraps lines: compare on words


def test_trainer_help_is_generated_from_every_config_field_and_its_comment():
    text = _help("-m", "trainers").split(" options: ", 1)[1]  # past the usage lines
    comments = field_comments(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        option = f"--{f.name.replace('_', '-')}"
        assert option in text, option
        assert comments[f.name], f"TrainConfig.{f.name} has no comment to explain it"
        shown = "none" if f.default is None else str(f.default).lower()
        entry = re.search(
            rf"{re.escape(option)} [^-]\S* (.*?)\(default: {re.escape(shown)}\)", text
        )
        assert entry, (option, shown)
        assert " ".join(comments[f.name].split()[:3]) in entry.group(1), option
    # a comment continued on the next line is part of the description
    assert "searches select on it, test is only for final reporting (default: 0.1)" in text
    assert "--agent-norm {pre,post,post_sum}" in text and "--hint-distance {ln_mse,l2_mse}" in text
    assert "--data-fraction X, --fraction X" in text


def test_help_options_come_from_any_dataclass(tmp_path, monkeypatch):
    """Generic over fields: a new field with a comment is a new documented option."""
    (tmp_path / "toy_config.py").write_text(
        "from dataclasses import dataclass\n"
        "from typing import Literal\n\n\n"
        "@dataclass(frozen=True)\n"
        "class Toy:\n"
        "    # --- a section header, not a description ---------\n"
        '    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 on CUDA, fp32 else\n'
        "    steps: int = 3  # how many; a reason that needs\n"
        "    #                 a second line\n"
        "    layers: tuple[int, ...] | None = None  # None: all\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    from toy_config import Toy

    assert field_comments(Toy) == {
        "precision": "auto: bf16 on CUDA, fp32 else",
        "steps": "how many; a reason that needs a second line",
        "layers": "None: all",
    }
    parser = ArgParser(prog="toy")
    add_dataclass_options(parser, Toy)
    text = " ".join(parser.format_help().split())
    assert "--precision {auto,fp32,bf16} auto: bf16 on CUDA, fp32 else (default: auto)" in text
    assert "--steps N how many; a reason that needs a second line (default: 3)" in text
    args = parser.parse_args(["--layers", "0,2", "--steps", "5"])
    assert (args.layers, args.steps, args.precision) == ([0, 2], 5, None)
    assert typing.get_type_hints(Toy)["steps"] is int


@pytest.mark.parametrize(
    "command, options",
    [
        (["run_study.py"], ["--space {" + ",".join(list_spaces()) + "}",
                            "--design {factorial,ofat}",
                            "--preset {auto,smoke,cpu,gpu}", "(default: auto)",
                            "--seed SEED sampler and trial seed (default: 0)", "--no-report"]),
        (["-m", "reports"], ["--study STUDY", "studies.db)", "--out"]),
    ],
)  # fmt: skip
def test_study_and_report_help_list_every_option(command, options):
    text = _help(*command)
    for option in options:
        assert option in text


def test_the_wheel_installs_run_study_and_three_console_scripts(tmp_path):
    """`py-modules` once sat in the package-data table, so run_study.py was not installed."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("bootstudy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = [n for n in names if n.endswith("entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    assert "run_study.py" in names
    assert "study/migrations/versions/0002_study_facts.py" in names
    assert "bootstudy-study = run_study:cli" in scripts
    assert "bootstudy-train = trainers.__main__:cli" in scripts
    assert "bootstudy-report = reports.__main__:cli" in scripts
