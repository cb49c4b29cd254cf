"""Where a command may write its output: never over its input, never over a file it did not make.

Every writer (the report and its .md/.tex, exports, saved weights) calls `check_output_path` on
each path before it reads or writes anything, so a slip such as
``python -m reports --study s --storage sqlite:///runs/studies.db --out runs/studies.db`` is one
line and exit 2 (a `ConfigError`) instead of every study in the database replaced by a page of
HTML. It refuses:

- the study database itself, or its SQLite companions (``-wal``, ``-journal``, ``-shm``): also
  through a symlink or a hard link, and whatever the path's suffix;
- any existing file whose suffix is not one the writer makes (``allowed_suffixes``): a
  ``results.csv`` or ``notes.txt`` that is not ours stays whole;
- an existing file that is a SQLite database whatever its name (a ``studies.html`` that is
  really someone's database: its first 16 bytes say so);
- a directory.

A new file with any name is fine (``--out report`` writes ``report``), and so is overwriting a
file of ours (an earlier report with the same name).

    from trainers.outputs import check_output_path
    out = check_output_path(args.out, args.storage, (".csv",))  # before the study is read
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from trainers.errors import ConfigError

__all__ = [
    "SQLITE_COMPANIONS",
    "REPORT_SUFFIXES",
    "OutputRefused",
    "check_output_path",
    "check_writable_dir",
]

SQLITE_COMPANIONS = ("", "-wal", "-journal", "-shm")  # the files SQLite keeps for one database
REPORT_SUFFIXES = (".html", ".md", ".tex")  # what `reports.build_report` writes
_SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file


class OutputRefused(ConfigError):
    """An output path that would overwrite the study's database or a file that is not ours."""


def check_output_path(
    path: str | os.PathLike[str],
    storage_url: str | None,
    allowed_suffixes: Iterable[str],
) -> Path:
    """`path` as a `Path` if a writer may write it, else `OutputRefused` in one line.

    `storage_url` is the database the command reads (None: none); `allowed_suffixes` the
    suffixes of the files this writer makes (``(".csv",)``, ``(".pt",)``, `REPORT_SUFFIXES`),
    which alone it may overwrite. Call it once per file written, before anything is read.
    """
    out = Path(path)
    allowed = tuple(s.lower() for s in allowed_suffixes)
    for database in _database_files(storage_url):
        if _same_file(out, database):
            raise OutputRefused(
                f"refusing to write {out}: it is the study database {database.name} "
                f"({_what(database)}); give another --out"
            )
    if out.is_dir():
        raise OutputRefused(f"refusing to write {out}: it is a directory")
    if not out.exists():
        return out
    if _is_sqlite(out):
        raise OutputRefused(f"refusing to write {out}: it is a SQLite database; give another --out")
    if out.suffix.lower() not in allowed:
        kinds = ", ".join(allowed) or "no file"
        raise OutputRefused(
            f"refusing to overwrite {out}: an existing file this command did not write (it "
            f"writes {kinds}); move it or give another --out"
        )
    return out


def check_writable_dir(directory: str | os.PathLike[str], what: str) -> Path:
    """`directory`, made if missing, once a file can be created in it; else one line naming
    `what` goes there ("results", "weights"). Checked before any work whose output it holds."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ConfigError(f"cannot write {what} under '{directory}': {err.strerror}") from None
    return path


def _database_files(storage_url: str | None) -> list[Path]:
    """The SQLite database of `storage_url` and its companions (none for PostgreSQL).

    Read from the URL's text (``sqlite:///relative.db``, ``sqlite:////abs.db``, a ``+driver``
    and a ``?query`` allowed), not through SQLAlchemy: this module is on the trainers floor,
    below the one module that speaks SQL (study.engine parses the same URLs for the store).
    """
    scheme, sep, rest = (storage_url or "").partition("://")
    if not sep or scheme.split("+")[0].lower() != "sqlite":
        return []
    database = rest[1:].split("?")[0]  # after the third slash: relative, or "/..." absolute
    if database in ("", ":memory:"):
        return []
    return [Path(database + suffix) for suffix in SQLITE_COMPANIONS]


def _same_file(a: Path, b: Path) -> bool:
    """Same path once resolved (symlinks, '..', relative), or the same inode (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist
        return False


def _is_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER
    except OSError:
        return False


def _what(database: Path) -> str:
    if database.name.endswith(SQLITE_COMPANIONS[1:]):
        return "a file SQLite keeps beside it"
    return "every study in it would be lost"
