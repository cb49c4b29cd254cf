"""Assembling the report: the sections' captions, HTML and figures into one self-contained page.

`build_page` renders the sections `reports.sections.SECTIONS` builds, in order: a navigation bar,
each section under its caption, every figure numbered, plotly.js embedded once in the head. It
computes nothing about the study. Every study-derived string is escaped by the section that made
it (tables escape their cells, figures their labels); here titles and captions are.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass, field

import plotly.graph_objects as go
import plotly.offline

from reports.load import LoadedStudy
from reports.sections import SECTIONS, Section, SectionBuilder, caveat

__all__ = ["Report", "build_page", "render"]

esc = html.escape
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;
background:#fafafa}
header{background:#1f2d3d;color:#fff;padding:18px 32px}
header h1{margin:0 0 6px;font-size:1.5em;word-break:break-all}
header p.caveat{background:#fff3cd;color:#5c4400;padding:6px 10px;border-radius:4px;margin:6px 0}
header nav a{color:#cfe3ff;margin-right:14px;text-decoration:none;font-size:.92em}
main{max-width:1280px;margin:0 auto;padding:8px 32px 48px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;padding:14px 20px;margin:18px 0}
h2{margin:4px 0 6px;font-size:1.2em}
p.caption{font-size:1.05em;font-weight:600;color:#1f4f82;margin:4px 0 12px}
p.note{color:#666;font-size:.9em}
table{border-collapse:collapse;margin:8px 0 14px;font-size:.88em;max-width:100%}
th,td{border-bottom:1px solid #e5e5e5;padding:4px 10px;text-align:left;vertical-align:top}
th{background:#f2f4f7}
td{font-variant-numeric:tabular-nums}
table.kv th{width:180px}
.figure{margin:6px 0 14px}
code{background:#f2f4f7;padding:1px 4px;border-radius:3px;word-break:break-all}
"""


@dataclass
class Report:
    """A built report: the page, what the sections export beside it, and their captions."""

    html: str
    exports: dict[str, str] = field(default_factory=dict)  # suffix (".md", ".tex") -> text
    captions: dict[str, str] = field(default_factory=dict)  # section id -> caption

    @property
    def markdown(self) -> str:
        return self.exports.get(".md", "")

    @property
    def latex(self) -> str:
        return self.exports.get(".tex", "")


def build_page(study: LoadedStudy, sections: Iterable[SectionBuilder] = SECTIONS) -> Report:
    """The report of one loaded study: each builder's section, in order (`reports.build_report`)."""
    built = [x for x in (build(study) for build in sections) if x is not None]
    return render(study.record.name, built, caveat(study.record))


def render(name: str, sections: list[Section], caveat: str = "") -> Report:
    """One HTML page from built sections, figures numbered in page order. `caveat`: what the
    study's preset is known not to show, in the header and at the top of every export."""
    figures = _Figures()
    nav = "".join(f'<a href="#{x.id}">{esc(x.title)}</a>' for x in sections)
    content = "".join(
        f'<section id="{x.id}"><h2>{esc(x.title)}</h2><p class="caption">{esc(x.caption)}</p>'
        + "".join(figures(part) if isinstance(part, go.Figure) else part for part in x.parts)
        + "</section>"
        for x in sections
    )
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>bootstudy report: {esc(name)}</title><style>{_CSS}</style>"
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head><body>'
        f"<header><h1>bootstudy report: {esc(name)}</h1>"
        + (f'<p class="caveat">Caveat: {esc(caveat)}</p>' if caveat else "")
        + f"<nav>{nav}</nav></header>"
        f"<main>{content}</main></body></html>\n"
    )
    exports: dict[str, str] = {}
    for x in sections:  # sections exporting the same format are written one after the other
        for suffix, text in x.exports.items():
            exports[suffix] = f"{exports[suffix]}\n\n{text}" if suffix in exports else text
    if caveat:
        note = {".md": f"**Caveat:** {caveat}\n\n", ".tex": f"% Caveat: {caveat}\n"}
        exports = {k: note.get(k, "") + v for k, v in exports.items()}
    return Report(page, exports, {x.id: x.caption for x in sections})


class _Figures:
    """Numbers the figures of one page; plotly.js is not included, the page embeds it once."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, fig: go.Figure) -> str:
        self.count += 1
        div = fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            div_id=f"fig-{self.count}",
            config={"displaylogo": False, "responsive": True},
        )
        return f'<div class="figure">{div}</div>'
