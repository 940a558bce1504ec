"""Name -> factory tables. The CLI's choices, error messages and test parametrisation read them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from repeval.errors import InvalidChoiceError

T = TypeVar("T")


class Registry(Generic[T]):
    """A table of named factories of one kind (datasets, methods, probes...).

    >>> methods = Registry("method")
    >>> @methods.register("ew")
    ... def make_ew(): return "EW"
    >>> methods.get("ew")()
    'EW'
    >>> methods.names()
    ['ew']
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise InvalidChoiceError(
                f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries
