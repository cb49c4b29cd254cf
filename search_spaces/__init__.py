"""Search spaces: named arms x searches, registered by name (`--list-spaces` shows them).

Lives here: `SearchSpace` and its distributions, budgets and arms (_base.py), the built-in spaces
(spaces.py), the order arms are listed in (order.py); a new space is one `@register_space` function.

May import: `trainers` (its config, errors and `Registry`), never torch at import time.
Imported by: `study` (the plan), `reports` (synthetic studies), `run_study.py`, tests and benches.
"""

from search_spaces import spaces as _builtin  # noqa: F401  (registers the built-in spaces)
from search_spaces._base import (
    SPACES,
    Arm,
    Budget,
    Categorical,
    Float,
    Int,
    SearchSpace,
    get_space,
    list_spaces,
    register_space,
)

__all__ = [
    "SPACES",
    "Arm",
    "Budget",
    "Categorical",
    "Float",
    "Int",
    "SearchSpace",
    "get_space",
    "list_spaces",
    "register_space",
]
