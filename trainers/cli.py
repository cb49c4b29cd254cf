"""Command-line plumbing shared by every bootstudy command: bad input is one line, exit code 2."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import io
import json
import os
import sys
import tokenize
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from trainers.errors import BootstudyError, Interrupted

__all__ = [
    "ArgParser",
    "parse_value",
    "run_cli",
    "field_comments",
    "add_dataclass_options",
    "program",
]


def parse_value(text: str):
    """Command-line text as JSON where it parses (numbers, true, null, lists), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless it has none (None, False) or says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        unset = default is None or default is False or default == [] or default is argparse.SUPPRESS
        if unset or "default:" in text:
            return text
        if not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


class ArgParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (`prog: error: ...`) and exit code 2, and every
    option's help shows its default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run `main`: user errors become one line on stderr and exit code 2; bugs keep tracebacks."""
    try:
        code = main(argv)
    except BootstudyError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as err:
        print(f"interrupted: {err}", file=sys.stderr)
        _exit_now(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def _exit_now(code: int) -> None:
    """Exit with `code`. After a study run, everything is recorded and Ray is stopped, but the
    interpreter's teardown of Ray's C++ core worker takes 4-5 s more: a signalled driver that must
    end within 20 s skips it (os._exit, once the streams are flushed)."""
    if "ray" not in sys.modules:
        sys.exit(code)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


# --- options generated from a config dataclass ---------------------------------------------------


def field_comments(cls: type) -> dict[str, str]:
    """Each field's comment in the dataclass's source: the one trailing its line, joined with the
    comment-only lines aligned under it (``#`` and two or more spaces: a reason of two lines)."""
    source = Path(sys.modules[cls.__module__].__file__).read_text()
    comments = {
        token.start[0]: token.string
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    lines = source.splitlines()
    (node,) = [
        n
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.ClassDef) and n.name == cls.__name__
    ]
    out = {}
    for stmt in node.body:
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        parts = [comments[n] for n in range(stmt.lineno, stmt.end_lineno + 1) if n in comments]
        following = stmt.end_lineno + 1  # a continuation: "#" then spaces aligning it under
        while following in comments and lines[following - 1].lstrip().startswith("#  "):
            parts.append(comments[following])
            following += 1
        out[stmt.target.id] = _sentences(p.lstrip("#").strip() for p in parts if p.strip("# "))
    return out


def _sentences(parts: Iterable[str]) -> str:
    """Comment lines as one text; a line starting a new sentence ends the one before it."""
    text = ""
    for part in parts:
        if text and part[:1].isupper() and text[-1] not in ".;:,":
            text += "."
        text = f"{text} {part}" if text else part
    return text


def add_dataclass_options(
    parser: argparse.ArgumentParser,
    cls: type,
    choices: Callable[[str], tuple[Any, ...] | None] | None = None,
    aliases: dict[str, list[str]] | None = None,
) -> None:
    """One ``--field-name`` option per field of dataclass `cls`, its help the field's comment, its
    choices (`choices(name)`, else a `Literal` type's values) and its default. Values are parsed
    by `parse_value` and checked by `cls` itself (choices included), so the command line and
    every other caller get the same one-line error; an option not given stays None (unset)."""
    comments = field_comments(cls)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        allowed = (choices(f.name) if choices else None) or _literal_values(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        text = comments.get(f.name, "") or f"{cls.__name__}.{f.name}"
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            *(aliases or {}).get(f.name, []),
            dest=f.name,
            metavar="{" + ",".join(map(str, allowed)) + "}" if allowed else _metavar(hints[f.name]),
            type=_parser(hints[f.name]),  # checked by `cls` itself: one message for every caller
            default=None,
            help=f"{text} (default: {_shown(default)})".replace("%", "%%"),
        )


def _literal_values(hint: Any) -> tuple[Any, ...] | None:
    for option in (hint, *typing.get_args(hint)):
        if typing.get_origin(option) is typing.Literal:
            return typing.get_args(option)
    return None


def _is_tuple(hint: Any) -> bool:
    return any(typing.get_origin(a) is tuple for a in (hint, *typing.get_args(hint)))


def _parser(hint: Any) -> Callable[[str], Any]:
    """`parse_value`, and for tuple fields a comma list: ``--hint-layers 0,2``."""
    if not _is_tuple(hint):
        return parse_value
    return lambda text: parse_value(f"[{text}]" if "," in text and text[:1] != "[" else text)


def _metavar(hint: Any) -> str:
    if _is_tuple(hint):
        return "I,J,..."
    names = [a.__name__ for a in (*typing.get_args(hint), hint) if isinstance(a, type)]
    kinds = [n for n in names if n != "NoneType"]
    return {"int": "N", "float": "X", "bool": "true|false"}.get(kinds[0] if kinds else "", "V")


def _shown(default: Any) -> str:
    if default is None:
        return "none"
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def program(module_form: str) -> str:
    """The name to show in usage: the console script's, or `module_form` (`python -m ...`)."""
    name = Path(sys.argv[0]).name
    return module_form if name in ("__main__.py", "-c", "") else name
