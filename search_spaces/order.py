"""The order arms are shown in, wherever they are listed (the report, the driver's summary).

A reader expects the order the space declares (the methods space lists vit and bootstrapping
first), modes in the registry's order (vit, agent, shared, joint), numbers ascending, then names:
never the alphabetical order of arm labels, which puts `impulse_shared` before `vit`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from search_spaces._base import get_space
from trainers.errors import ConfigError
from trainers.modes import MODES


def arm_order(arms: Mapping[str, Mapping[str, Any]], space: str) -> list[str]:
    """The labels of `arms` (label -> factors) in display order for a study of `space`."""
    try:
        declared = dict(get_space(space).arms)
    except ConfigError:  # a space no longer registered only loses its declared order
        declared = {}
    return sorted(arms, key=lambda arm: _key(arms[arm], declared))


def _key(factors: Mapping[str, Any], declared: dict[str, tuple]) -> tuple:
    modes = list(MODES)
    key = []
    for k, v in factors.items():
        if k == "mode" and v in modes:
            key.append((0, modes.index(v), ""))
        elif v in declared.get(k, ()):
            key.append((0, declared[k].index(v), ""))
        elif isinstance(v, int | float):
            key.append((1, float(v), ""))
        else:
            key.append((2, 0.0, str(v)))
    return tuple(key)
