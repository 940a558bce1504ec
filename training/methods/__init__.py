"""Multi-task methods by name; `--method` choices come from `METHODS`."""

from __future__ import annotations

from collections.abc import Callable

from repeval.registry import Registry
from repeval.training.methods.base import LossWeighting, Method, ParamGroups
from repeval.training.methods.cagrad import CAGrad
from repeval.training.methods.dwa import DWA
from repeval.training.methods.ew import EqualWeighting
from repeval.training.methods.gradient import GradientMethod
from repeval.training.methods.imtl import IMTL
from repeval.training.methods.mgda import MGDA
from repeval.training.methods.nash import NashMTL
from repeval.training.methods.pcgrad import PCGrad
from repeval.training.methods.uw import UncertaintyWeighting

METHODS: Registry[Callable[[int], Method]] = Registry("method")
for _name, _factory in {
    "ew": EqualWeighting, "dwa": DWA, "uw": UncertaintyWeighting, "pcgrad": PCGrad, "mgda": MGDA,
    "cagrad": CAGrad, "imtl": IMTL, "nash": NashMTL,
}.items():
    METHODS.register(_name)(_factory)


def create_method(name: str, num_tasks: int) -> Method:
    return METHODS.get(name)(num_tasks)


__all__ = [
    "METHODS", "Method", "LossWeighting", "GradientMethod", "ParamGroups", "EqualWeighting", "DWA",
    "UncertaintyWeighting", "PCGrad", "MGDA", "CAGrad", "IMTL", "NashMTL", "create_method",
]
