"""Name -> factory tables. The CLI's choices, error messages and test parametrisation read them.

An entry can be registered lazily as `"module:attribute"`: its name is known at once (the CLI
lists it without importing torch) and the module is imported on first `get`. Every entry of
repeval's registries describes itself: a one-line `summary` and the `reference` (paper or code)
it follows, given at registration, shown by `repeval list`, `--help` and the docs' tables."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Generic, TypeVar

from repeval.errors import InvalidChoiceError

T = TypeVar("T")


class Registry(Generic[T]):
    """A table of named factories of one kind (datasets, methods, probes...).

    >>> methods = Registry("method")
    >>> @methods.register("ew", summary="the sum of task losses", reference="baseline")
    ... def make_ew(): return "EW"
    >>> methods.get("ew")()
    'EW'
    >>> methods.names(), methods.describe("ew")
    (['ew'], ('the sum of task losses', 'baseline'))
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        self._meta: dict[str, dict] = {}

    def register(self, name: str, summary: str = "", reference: str = "") -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries or name in self._lazy:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = obj
            self._meta[name] = {"summary": summary, "reference": reference}
            return obj

        return decorator

    def register_lazy(self, name: str, target: str, summary: str = "", reference: str = "", **meta: object) -> None:
        """Register `"package.module:attribute"`, imported when `get(name)` first asks for it.
        `meta` holds what callers need to know about the entry without importing it."""
        if name in self._entries or name in self._lazy:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._lazy[name] = target
        self._meta[name] = {"summary": summary, "reference": reference, **meta}

    def describe(self, name: str) -> tuple[str, str]:
        """(one-line summary, reference) of an entry, importing nothing."""
        meta = self.meta(name)
        return meta.get("summary", ""), meta.get("reference", "")

    def table(self) -> list[tuple[str, str, str]]:
        """(name, summary, reference) of every entry, by name."""
        return [(name, *self.describe(name)) for name in self.names()]

    def meta(self, name: str) -> dict:
        """The metadata given at registration (empty for eager entries)."""
        self.check(name)
        return dict(self._meta.get(name, {}))

    def get(self, name: str) -> T:
        if isinstance(name, str) and name not in self._entries and name in self._lazy:
            module, _, attribute = self._lazy[name].partition(":")
            self._entries[name] = getattr(importlib.import_module(module), attribute)
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise InvalidChoiceError(
                f"unknown {self.kind} {name!r}; choose from: {', '.join(self.names())}"
            ) from None

    def check(self, name: object) -> None:
        """Raise the `get` message for an unknown name, importing nothing."""
        if not isinstance(name, str) or name not in self:
            self.get(name)  # type: ignore[arg-type]

    def names(self) -> list[str]:
        return sorted({*self._entries, *self._lazy})

    def __contains__(self, name: object) -> bool:
        return name in self._entries or name in self._lazy
