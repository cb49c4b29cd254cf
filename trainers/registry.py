"""`Registry`: names -> entries, for everything in bootstudy that has a name.

Datasets, training modes, agent designs and search spaces are each one `Registry`: registering is
a decorator (or `add`), a duplicate name is an error, listing is free, and looking up an unknown
name is one clear `BootstudyError` that lists the choices (timm's `register_model` habit).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from trainers.errors import BootstudyError, ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(dict[str, T], Generic[T]):
    def __init__(self, kind: str, error: type[BootstudyError] = ConfigError):
        super().__init__()
        self.kind = kind  # what an entry is, for messages: "dataset", "search space", ...
        self.error = error  # raised for unknown names (DataError for datasets)

    def add(self, name: str, entry: T) -> T:
        if name in self:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self[name] = entry
        return entry

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: `@REGISTRY.register("name")` adds the decorated object under `name`."""
        return lambda entry: self.add(name, entry)

    def names(self) -> list[str]:
        return sorted(self)

    def lookup(self, name: str) -> T:
        if name not in self:
            raise self.error(
                f"unknown {self.kind} '{name}'; choose from: {', '.join(self.names())}"
            )
        return self[name]
