"""Ablation reports: one self-contained HTML page per study, plus its results table as .md and .tex.

    >>> from reports import build_report
    >>> build_report("fraction_sweep", "sqlite:///runs/studies.db")  # doctest: +SKIP
    PosixPath('runs/reports/fraction_sweep.html')

or from the shell: `python -m reports --study fraction_sweep`. The page opens from disk with no
network (plotly.js is embedded once) and holds, each under a caption stating its finding in
numbers: summary, the space's main view, learning curves, search diagnostics, results against the
baseline (n, mean ± std, 95% CI, p, Holm), cost, provenance.

Lives here: `load_study` (load.py: one study through the store's query API), the section builders
in page order (sections.py), the main views a space can choose (main_views.py), the statistics
(stats.py), the captions' sentences (wording.py: their verbs follow the numbers), figures and
tables, the page assembly (page.py), synthetic studies (synthetic.py) and
`python -m reports`.

May import: `study` (the store, the statuses, the plan), `search_spaces`, `trainers` (errors, cli).
Imported by: `run_study.py` (after the study), tests and benches; never by `study`.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from trainers.errors import ConfigError
from trainers.home import runs_dir

__all__ = ["Report", "build_report", "default_out_path", "report_stem"]


def default_out_path(study_name: str) -> Path:
    """runs/reports/<study>.html; a name with characters unsafe in file names gets them replaced
    by '_' and a short hash of the whole name, so two names never share a file (`研究-ñ` and
    `実験-é` both read `__-_`)."""
    return runs_dir() / "reports" / (report_stem(study_name) + ".html")


def report_stem(study_name: str) -> str:
    """The file name (without suffix) of a study's report: the name itself when it is safe in a
    file name, else its safe characters plus the first 8 hex digits of its SHA-256."""
    safe = re.sub(r"[^A-Za-z0-9._=,+-]", "_", study_name)
    if safe == study_name and not safe.startswith("."):
        return safe
    digest = hashlib.sha256(study_name.encode("utf-8")).hexdigest()[:8]
    return f"{safe}-{digest}"


def build_report(study_name: str, storage_url: str, out_path: str | Path | None = None) -> Path:
    """Build the report of `study_name` from `storage_url`; returns the HTML's path.

    Writes `<out>.html` and, beside it, `<out>.md` and `<out>.tex` with the results table.
    Raises `study.engine.StorageError` (a `BootstudyError`) for a bad URL, a missing store or
    an unknown study.
    """
    from reports.load import load_study  # here, not at import: `--help` needs no pandas/plotly
    from reports.page import build_page
    from study.store import Store
    from trainers.outputs import REPORT_SUFFIXES, check_output_path

    out = Path(out_path) if out_path is not None else default_out_path(study_name)
    # before the study is read: a bad --out is one line, at once; never over the database
    _check_writable(out)
    for path in (out, *(out.with_suffix(suffix) for suffix in (".md", ".tex"))):
        check_output_path(path, storage_url, REPORT_SUFFIXES)
    with Store.open_existing(storage_url) as store:  # reading never creates a database
        report = build_page(load_study(store, study_name))
    try:
        _write_whole(out, report.html)
        for suffix, text in report.exports.items():
            _write_whole(out.with_suffix(suffix), text)
    except OSError as err:  # e.g. the disk filled up while writing
        raise ConfigError(f"cannot write the report at {out}: {err.strerror or err}") from None
    return out


def _write_whole(path: Path, text: str) -> None:
    """Write `path` so that a reader (or a kill) never finds it half-written: the text goes to a
    temporary file beside it, which then replaces it in one rename. A report of an earlier run
    stays whole until the new one is complete."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _check_writable(out: Path) -> None:
    """`out` and its siblings (.md, .tex) can be written: its directory exists or can be made."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot write the report at {out}: {err.strerror or err}") from None
    if out.is_dir():
        raise ConfigError(f"cannot write the report at {out}: it is a directory")
    target = out if out.exists() else out.parent
    if not os.access(target, os.W_OK):
        raise ConfigError(f"cannot write the report at {out}: {target} is not writable")


def __getattr__(name: str):
    if name == "Report":
        from reports.page import Report

        return Report
    raise AttributeError(f"module 'reports' has no attribute {name!r}")
