"""Tables of a report, written three ways from the same rows: HTML, Markdown and LaTeX.

Rows are lists of already formatted strings; each writer escapes for its own format.

    >>> markdown_table(["arm", "n"], [["mode=vit", "3"]]).splitlines()[2]
    '| mode=vit | 3 |'
"""

from __future__ import annotations

import html
from collections.abc import Sequence

from reports.effects import few_seeds_note
from reports.stats import Comparison, Summary, format_interval

__all__ = [
    "RESULT_HEADER",
    "result_rows",
    "html_table",
    "markdown_table",
    "latex_table",
    "format_p",
]

RESULT_HEADER = [
    "arm", "source", "n", "mean ± 95% CI (%)", "95% CI (%)", "std (%)", "baseline", "Δ (points)",
    "p", "test", "p (Holm)", "replicates",
]  # fmt: skip
_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "±": r"$\pm$", "Δ": r"$\Delta$", "<": r"\textless{}", ">": r"\textgreater{}",
}  # fmt: skip
SOURCE_LABEL = {"test": "test", "val": "val (optimistic)"}


def format_p(p: float | None) -> str:
    if p is None:
        return "–"
    return f"{p:.2g}" if p >= 0.001 else f"{p:.1e}"


def result_rows(
    summaries: dict[str, Summary], sources: dict[str, str], comparisons: Sequence[Comparison]
) -> list[list[str]]:
    """One row per arm: n, mean ± the 95% CI's half-width, the CI, std, the comparison with its
    baseline if it has one, and in words whether the arm has too few seeds to claim an effect."""
    by_arm = {c.arm: c for c in comparisons}
    rows = []
    for arm, s in summaries.items():
        half = f" ± {(s.ci[1] - s.ci[0]) * 50:.1f}" if s.ci is not None else ""
        c = by_arm.get(arm)
        rows.append(
            [
                arm, SOURCE_LABEL.get(sources.get(arm, ""), sources.get(arm, "")), str(s.n),
                f"{s.mean * 100:.1f}{half}", format_interval(s),
                f"{s.std * 100:.1f}" if s.std is not None else "–",
                c.baseline if c else "(baseline)" if _is_baseline(arm, comparisons) else "–",
                f"{c.diff * 100:+.1f}" if c else "–", format_p(c.p) if c else "–",
                c.test if c else "–", format_p(c.p_holm) if c else "–",
                few_seeds_note(s.n) or f"{s.n} seeds",
            ]
        )  # fmt: skip
    return rows


def _is_baseline(arm: str, comparisons: Sequence[Comparison]) -> bool:
    return any(c.baseline == arm for c in comparisons)


def html_table(header: Sequence[str], rows: Sequence[Sequence[object]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{_breakable(v)}</td>" for v in row) + "</tr>" for row in rows
    )
    return (
        f'<table class="{html.escape(cls)}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _breakable(value: object) -> str:
    """Escaped, and free to wrap after each comma: a designed arm's name
    (mode=shared,kd_vit=0.5,...) wraps between its factors at a laptop's width, while numbers
    (0.0044, 7.1e-04) never break inside."""
    return html.escape(str(value)).replace(",", ",<wbr>")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        return str(v).replace("|", r"\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def latex_escape(text: object) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def latex_table(header: Sequence[str], rows: Sequence[Sequence[object]], caption: str) -> str:
    """A booktabs table (needs \\usepackage{booktabs})."""
    lines = [
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\begin{tabular}{" + "l" * 2 + "r" * (len(header) - 2) + "}",
        r"\toprule",
        " & ".join(latex_escape(h) for h in header) + r" \\",
        r"\midrule",
        *(" & ".join(latex_escape(v) for v in row) + r" \\" for row in rows),
        r"\bottomrule",
        r"\end{tabular}",
        r"\caption{" + latex_escape(caption) + "}",
        r"\end{table}",
    ]
    return "\n".join(lines) + "\n"
