"""A report that cannot be written is a failure: non-zero exit, one line that says the study's
results are safe in the database and how to write the report again.

Before: an unwritable report directory, or a disk full while the report was written, printed a
warning on stdout and exited 0, as if all had gone well.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from conftest import REPO, one_trial_study

# The end of `run_study.py`: the study is stored, then its report is written (in a subprocess:
# `run_cli` exits, and a file-size limit stands in for a full disk).
WRITE_REPORT = textwrap.dedent(
    """
    import resource, signal, sys
    from study.plan import StudyConfig
    from trainers.cli import run_cli
    import run_study
    url, results, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if limit:  # writes past `limit` bytes fail (EFBIG), as they would on a full disk (ENOSPC)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    config = StudyConfig.from_dict(
        dict(space="data_fraction", name="s", preset="smoke", storage=url, results_dir=results)
    )
    run_cli(lambda argv: run_study.write_report(config) and 0)
    """
)


def _write_report(url: str, results, limit: int = 0) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", WRITE_REPORT, url, str(results), str(limit)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_failed_safely(done: subprocess.CompletedProcess, url: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr[-2000:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert f"the study's results are safe in {url}" in lines[0]
    assert "python -m reports --study s --storage" in lines[0]
    assert "warning" not in done.stdout


def test_an_unwritable_report_directory_fails_and_says_the_results_are_safe(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    one_trial_study(url)
    results = tmp_path / "results"
    results.mkdir()
    (results / "reports").write_text("a file where the report folder goes")  # (root ignores modes)
    done = _write_report(url, results)
    _assert_failed_safely(done, url)
    assert "cannot write the report" in done.stderr


def test_a_full_disk_while_writing_the_report_fails_and_says_the_results_are_safe(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    one_trial_study(url)
    done = _write_report(url, tmp_path / "results", limit=200_000)  # the page is megabytes
    _assert_failed_safely(done, url)
    assert "File too large" in done.stderr
    reports = tmp_path / "results" / "reports"
    assert not [p for p in reports.iterdir() if p.suffix == ".html"]  # nothing half-written
    done = _write_report(url, tmp_path / "results")  # with room, the same call writes it
    assert done.returncode == 0, done.stderr[-2000:]
    assert (reports / "s.html").stat().st_size > 200_000
