"""No output path can be an input, and no two studies share a report file.

Before: `python -m reports --study s --storage sqlite:///X/studies.db --out X/studies.db` replaced
the database with a page of HTML and exited 0 (every study in it gone, `studies.md` and
`studies.tex` written beside it); the studies `研究-ñ-🚀` and `実験-é-🚀` both wrote
`reports/__-_-_.html`; `python -m reports` from a folder holding a `reports/` folder (the runs
directory holds one) failed with "cannot import name 'build_report' from 'reports'".
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, one_trial_study

from reports import default_out_path
from study.store import Store
from trainers.outputs import REPORT_SUFFIXES, OutputRefused, check_output_path

SQLITE_HEADER = b"SQLite format 3\x00"


def _report(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "reports", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _whole(db: Path) -> bool:
    with Store(f"sqlite:///{db}") as store:
        return [s.name for s in store.list_studies()] == ["s"]


@pytest.mark.parametrize("target", ["studies.db", "studies.db-wal", "link.html", "hard.html"])
def test_the_report_never_overwrites_its_database(tmp_path, target):
    db = tmp_path / "studies.db"
    url = f"sqlite:///{db}"
    one_trial_study(url)
    with Store(url) as store:  # keep a -wal file: open it the way a running driver would
        store.list_studies()
    if target == "link.html":
        (tmp_path / target).symlink_to(db)
    if target == "hard.html":
        os.link(db, tmp_path / target)
    before = db.read_bytes()
    done = _report("--study", "s", "--storage", url, "--out", str(tmp_path / target))
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: refusing to write") and "database" in lines[0]
    assert db.read_bytes() == before and _whole(db)
    assert not list(tmp_path.glob("*.md")) and not list(tmp_path.glob("*.tex"))


def test_the_report_never_overwrites_a_file_it_did_not_write(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    one_trial_study(url)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    other_db = tmp_path / "other.html"  # a database whatever its name
    other_db.write_bytes(SQLITE_HEADER + b"\0" * 100)
    for out, sibling in ((notes, None), (other_db, None), (tmp_path / "r.html", "r.md")):
        if sibling:  # the .md written beside r.html would replace someone's file of that name
            (tmp_path / sibling).write_bytes(SQLITE_HEADER)
        done = _report("--study", "s", "--storage", url, "--out", str(out))
        assert done.returncode == 2, done.stderr[-2000:]
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert notes.read_text() == "mine" and other_db.read_bytes().startswith(SQLITE_HEADER)
    assert not (tmp_path / "r.html").exists()
    # a report of ours is rewritten: the same command twice succeeds
    out = tmp_path / "again.html"
    for _ in range(2):
        done = _report("--study", "s", "--storage", url, "--out", str(out))
        assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_text().lstrip().lower().startswith("<!doctype html")
    assert {p.suffix for p in tmp_path.glob("again.*")} == {".html", ".md", ".tex"}


def test_check_output_path_is_the_one_guard(tmp_path):
    """The guard every writer calls (reports, exports, weights), on its own."""
    db = tmp_path / "s.db"
    url = f"sqlite:///{db}"
    with Store(url):
        pass
    for bad in ("s.db", "s.db-wal", "s.db-shm", "s.db-journal", "./../" + tmp_path.name + "/s.db"):
        with pytest.raises(OutputRefused, match="study database"):
            check_output_path(tmp_path / bad, url, (".csv",))
    (tmp_path / "theirs.parquet").write_text("x")
    with pytest.raises(OutputRefused, match="did not write"):
        check_output_path(tmp_path / "theirs.parquet", url, (".csv",))
    (tmp_path / "ours.csv").write_text("a,b\n")
    assert check_output_path(tmp_path / "ours.csv", url, (".csv",)) == tmp_path / "ours.csv"
    assert check_output_path(tmp_path / "new.pt", url, (".pt",)) == tmp_path / "new.pt"
    assert check_output_path(tmp_path / "new", None, REPORT_SUFFIXES) == tmp_path / "new"
    with pytest.raises(OutputRefused, match="directory"):
        check_output_path(tmp_path, url, REPORT_SUFFIXES)


def test_colliding_study_names_get_their_own_report_files():
    names = ["研究-ñ-🚀", "実験-é-🚀", "a/b", "a_b", "a:b", ".hidden"]
    paths = [default_out_path(n) for n in names]
    assert len({p.name for p in paths}) == len(names)
    assert paths[0].name.startswith("__-_-_-") and paths[3].name == "a_b.html"  # readable part
    assert default_out_path("fraction_sweep").name == "fraction_sweep.html"  # safe: unchanged
    assert default_out_path(names[0]) == paths[0]  # the same name, the same file


# setuptools' editable install (pip install -e .): a finder appended to sys.meta_path maps our
# top-level packages to the checkout, after the working directory on sys.path.
EDITABLE = textwrap.dedent(
    """
    import runpy, sys
    from importlib.machinery import PathFinder
    from importlib.util import spec_from_file_location
    ROOT = {root!r}
    MAPPING = {{p: f"{{ROOT}}/{{p}}" for p in ("reports", "study", "trainers", "search_spaces")}}
    class Editable:
        @classmethod
        def find_spec(cls, fullname, path=None, target=None):
            if fullname in MAPPING:
                return spec_from_file_location(fullname, MAPPING[fullname] + "/__init__.py")
            parent = fullname.rpartition(".")[0]
            if parent in MAPPING:
                return PathFinder.find_spec(fullname, path=[MAPPING[parent]])
    sys.meta_path.insert(sys.meta_path.index(PathFinder) + 1, Editable)  # before any installed
    sys.path[:] = [""] + [p for p in sys.path if p and p != ROOT]
    sys.argv = ["reports", *sys.argv[1:]]
    runpy.run_module("reports", run_name="__main__", alter_sys=True)
    """
)


def test_python_m_reports_works_from_a_folder_holding_a_reports_folder(tmp_path):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    one_trial_study(url)
    (tmp_path / "reports").mkdir()  # as in the runs directory
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", EDITABLE.format(root=str(REPO)), "--study", "s", "--storage", url],
        cwd=tmp_path,
        env={**env, "BOOTSTUDY_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert Path(done.stdout.strip()) == tmp_path / "reports" / "s.html"
    assert (tmp_path / "reports" / "s.html").stat().st_size > 10_000


def test_the_export_never_overwrites_a_database_or_a_file_it_did_not_write(tmp_path):
    db = tmp_path / "studies.db"
    one_trial_study(f"sqlite:///{db}")
    out = tmp_path / "out"
    out.mkdir()
    # a database that happens to carry an export's name, and a notes file under another's
    (out / "s-trials.csv").write_bytes(db.read_bytes())
    refused = _report("--study", "s", "--storage", f"sqlite:///{db}", "--export", "csv",
                      "--out", str(out))  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "s-trials.csv" in refused.stderr
    assert (out / "s-trials.csv").read_bytes()[:16] == SQLITE_HEADER  # untouched
    assert not (out / "s-metrics.csv").exists()  # nothing written before the refusal
    (out / "s-trials.csv").unlink()
    done = _report("--study", "s", "--storage", f"sqlite:///{db}", "--export", "csv",
                   "--out", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (out / "s-trials.csv").read_text().startswith("id,") and _whole(db)


def test_saved_weights_never_overwrite_a_database_or_a_file_they_did_not_write(tmp_path):
    db = tmp_path / "studies.db"
    one_trial_study(f"sqlite:///{db}")
    out = tmp_path / "weights"
    out.mkdir()
    (out / "vit.pt").write_bytes(db.read_bytes())  # a database under a weights file's name
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "trainers", "--epochs", "1", "--data-fraction", "0.01", "--save",
         str(out)], capture_output=True, text=True, timeout=300, cwd=REPO, env=env,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "vit.pt" in done.stderr, done.stderr
    assert (out / "vit.pt").read_bytes()[:16] == SQLITE_HEADER  # refused before training
    (out / "vit.pt").unlink()
    (out / "config.json").symlink_to(db)  # the study database itself, through a link
    from trainers.weights import check_weights_dir

    with pytest.raises(OutputRefused, match="study database"):
        check_weights_dir(out, f"sqlite:///{db}")
