"""The one registry mechanism: model families, data formats, termination policies."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Generic, TypeVar

from core.base.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = item
            return item

        return add

    def get(self, name: str) -> T:
        if name not in self._items:
            hints = difflib.get_close_matches(name, self._items, n=3)
            raise ConfigError(self.kind, f"unknown {self.kind} {name!r}", sorted(self._items), hints)
        return self._items[name]

    def names(self) -> list[str]:
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        return list(self._items.items())
