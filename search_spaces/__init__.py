"""Search spaces: named arms x searches, registered by name (`--list-spaces` shows them)."""

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
