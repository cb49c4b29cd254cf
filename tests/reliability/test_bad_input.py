"""Bad input, generated: every wrong command line is one line on stderr, exit code 2, no
traceback, nothing written. Hypothesis draws one wrong option (numbers out of range or not numbers
at all, empty or slashed study names, malformed addresses and URLs, unknown or study-owned --set
keys, arm values outside their domain) among valid ones."""

from __future__ import annotations

import contextlib
import io
import string
from pathlib import Path

import pytest
from conftest import run_study_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainers.cli import run_cli

NOT_A_NUMBER = st.text(alphabet=string.ascii_letters + "-_", min_size=1, max_size=8).filter(
    lambda t: t.lower() not in ("nan", "inf", "infinity") and not t.startswith("-")
)
BAD_FLOAT = st.sampled_from(["nan", "inf", "-inf", "-1", "0"])

BAD_OPTIONS = st.one_of(
    st.tuples(st.sampled_from(["--trials", "--epochs"]), st.integers(max_value=0).map(str)),
    st.tuples(
        st.sampled_from(["--final-seeds", "--concurrency", "--retries"]),
        st.integers(max_value=-1).map(str),
    ),
    st.tuples(st.sampled_from(["--trials", "--epochs", "--seed", "--retries"]), NOT_A_NUMBER),
    st.tuples(st.just("--cpus-per-trial"), BAD_FLOAT),
    st.tuples(st.just("--gpus-per-trial"), st.sampled_from(["nan", "inf", "-0.5", "-1"])),
    st.tuples(st.just("--reduction-factor"), st.sampled_from(["1", "0.5", "nan", "-2"])),
    st.tuples(st.just("--study"), st.sampled_from(["", " ", "a/b", "x" * 201])),
    st.tuples(st.just("--address"), st.text(alphabet=string.ascii_lowercase + ".", min_size=1)),
    st.tuples(st.just("--address"), st.integers(min_value=65536).map(lambda p: f"host:{p}")),
    st.tuples(
        st.just("--storage"),
        st.sampled_from(
            ["foo://x", "mysql://u@h/d", "sqlite://", "sqlite:///:memory:", "not a url"]
        ),
    ),
    st.tuples(
        st.just("--set"),
        st.sampled_from(["no_such_field=1", "seed=3", "epochs=2", "lr", "=1", "data_fraction=0.5"]),
    ),
    st.tuples(
        st.just("--arm"),
        st.sampled_from(
            [
                "data_fraction=0",
                "data_fraction=1.5",
                "data_fraction=-0.1,0.5",
                "mode=nope",
                "no_such_factor=1",
                "data_fraction",
            ]
        ),
    ),
    st.tuples(st.just("--preset"), st.sampled_from(["huge", "", "SMOKE"])),
    st.tuples(st.just("--space"), st.sampled_from(["nope", "", "data-fraction"])),
)
VALID = st.lists(
    st.sampled_from(
        [
            ("--trials", "2"),
            ("--epochs", "3"),
            ("--concurrency", "1"),
            ("--seed", "7"),
            ("--final-seeds", "0"),
        ]
    ),
    max_size=3,
    unique_by=lambda o: o[0],
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad=BAD_OPTIONS, valid=VALID)
def test_a_bad_command_line_is_one_line_exit_2_and_writes_nothing(tmp_path_factory, bad, valid):
    where = tmp_path_factory.mktemp("bad")
    argv = ["--space", "data_fraction", "--preset", "smoke"]
    argv += ["--storage", f"sqlite:///{where / 's.db'}", "--results-dir", str(where / "runs")]
    for option, value in valid:
        argv += [option, value]
    argv += [bad[0], bad[1]]
    # A dry run checks everything a run checks up front, and never starts one by accident.
    code, err = run_study_cli([*argv, "--dry-run"])
    assert code == 2, (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, (argv, err)
    assert list(Path(where).iterdir()) == [], argv  # nothing written


def test_the_bad_input_strategies_are_each_refused_for_their_own_reason():
    """The valid part alone runs a dry run: each failure above is the bad option's."""
    code, err = run_study_cli(
        [
            "--space",
            "data_fraction",
            "--preset",
            "smoke",
            "--trials",
            "2",
            "--dry-run",
            "--storage",
            "sqlite:////tmp/x.db",
        ]
    )
    assert code == 0, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--address", "foo"], "--address must be HOST:PORT"),
        (["--study", ""], "--study must not be empty"),
        (["--storage", "foo://x"], "unsupported database URL"),
    ],
)
def test_checks_run_before_the_dataset_loads_or_anything_is_written(tmp_path, argv, message):
    code, err = run_study_cli(
        [
            "--space",
            "data_fraction",
            "--preset",
            "smoke",
            "--results-dir",
            str(tmp_path / "runs"),
            *argv,
        ]
    )
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists()


def _damaged_database(path: Path) -> str:
    """A study database with Optuna trials in it, then 8 KiB of garbage over its middle pages."""
    import optuna

    from study.engine import optuna_storage
    from study.store import Store

    url = f"sqlite:///{path}"
    Store(url).close()
    storage = optuna_storage(url)
    for i in range(3):
        study = optuna.create_study(study_name=f"x{i}", storage=storage)
        study.optimize(lambda t: t.suggest_float("a", 0, 1), n_trials=20)
    storage.engine.dispose()
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.seek(size // 2)
        f.write(b"\xde\xad\xbe\xef" * 2048)
    return url


def test_a_damaged_sqlite_file_is_one_line_before_anything_runs(tmp_path):
    url = _damaged_database(tmp_path / "s.db")
    runs = tmp_path / "runs"
    code, err = run_study_cli(
        [
            "--space",
            "data_fraction",
            "--preset",
            "smoke",
            "--storage",
            url,
            "--results-dir",
            str(runs),
        ]
    )
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "is damaged" in err, err


def test_an_unwritable_report_path_is_one_line(tmp_path):
    from reports.__main__ import main as report_main
    from study.store import Store

    url = f"sqlite:///{tmp_path / 's.db'}"
    with Store(url) as store:
        store.create_study("s", "data_fraction", "fashion_mnist", "smoke", "c", {}, {})
    for out in ("/proc/nope/r.html", str(tmp_path)):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
            run_cli(report_main, ["--study", "s", "--storage", url, "--out", out])
        assert exited.value.code == 2, err.getvalue()
        lines = err.getvalue().strip().splitlines()
        assert len(lines) == 1 and "cannot write the report at" in lines[0], err.getvalue()
