"""Multi-task methods by name; `--method` choices come from `METHODS`."""

from __future__ import annotations

from collections.abc import Callable

from repeval.registry import Registry
from repeval.training.methods.base import LossWeighting, Method
from repeval.training.methods.ew import EqualWeighting

METHODS: Registry[Callable[[int], Method]] = Registry("method")
METHODS.register("ew")(EqualWeighting)


def create_method(name: str, num_tasks: int) -> Method:
    return METHODS.get(name)(num_tasks)


__all__ = ["METHODS", "Method", "LossWeighting", "EqualWeighting", "create_method"]
