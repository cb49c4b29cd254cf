"""Designed ablations: which cells of the factors a study runs.

    factorial  every combination of the factors' values (the product), as a search space's grid
    ofat       one factor at a time: the base cell, plus one cell per other value of each factor,
               the rest held at the base's values

A space may instead list its cells outright (`SearchSpace.cells`, e.g. the paper's Table 4 rows).

>>> [c["mode"] + str(c["hint"]) for c in factorial({"mode": ("vit", "shared"), "hint": (0, 5)})]
['vit0', 'vit5', 'shared0', 'shared5']
>>> ofat({"mode": ("vit", "shared"), "hint": (0, 5, 10)}, {"mode": "shared", "hint": 5})
[{'mode': 'shared', 'hint': 5}, {'mode': 'vit', 'hint': 5}, {'mode': 'shared', 'hint': 0}, \
{'mode': 'shared', 'hint': 10}]
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from trainers.errors import ConfigError

__all__ = ["DESIGNS", "factorial", "ofat", "design_cells"]

DESIGNS = ("factorial", "ofat")


def factorial(factors: Mapping[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Every combination, the first factor varying slowest."""
    return [
        dict(zip(factors, values, strict=True)) for values in itertools.product(*factors.values())
    ]


def ofat(factors: Mapping[str, tuple[Any, ...]], base: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The base cell first, then for each factor in order one cell per value other than the
    base's, every other factor at the base's value. A factor the base does not name starts at
    its first value. Exactly 1 + sum(len(values) - 1) cells when the base's values are listed."""
    start = {k: base.get(k, values[0]) for k, values in factors.items()}
    cells = [start]
    for name, values in factors.items():
        cells.extend({**start, name: v} for v in values if not _same(v, start[name]))
    return cells


def design_cells(
    design: str, factors: Mapping[str, tuple[Any, ...]], base: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    if design == "factorial":
        return factorial(factors)
    if design == "ofat":
        return ofat(factors, base or {})
    raise ConfigError(f"unknown design {design!r}; choose from: {', '.join(DESIGNS)}")


def _same(a: Any, b: Any) -> bool:
    # 5 and 5.0 name the same cell (TrainConfig turns ints into floats); True is not 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b
