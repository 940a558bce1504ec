"""Multi-task methods by name; `--method` choices come from `METHODS`.

A method's options are its constructor's keyword arguments (after `num_tasks`); `--method-option
KEY=VALUE` and sweep files set them, checked against `method_options(name)`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from repeval.errors import InvalidChoiceError
from repeval.registry import Registry
from repeval.training.methods.autol import AutoLambda
from repeval.training.methods.base import LossWeighting, Method, ParamGroups
from repeval.training.methods.cagrad import CAGrad
from repeval.training.methods.dwa import DWA
from repeval.training.methods.ew import EqualWeighting
from repeval.training.methods.gradient import GradientMethod
from repeval.training.methods.gradnorm import GradNorm
from repeval.training.methods.imtl import IMTL
from repeval.training.methods.mgda import MGDA
from repeval.training.methods.nash import NashMTL
from repeval.training.methods.pcgrad import PCGrad
from repeval.training.methods.pta import PTA
from repeval.training.methods.sam import SAM
from repeval.training.methods.single import SingleTask
from repeval.training.methods.uw import UncertaintyWeighting

METHODS: Registry[Callable[..., Method]] = Registry("method")
_TABLE = {
    "single": SingleTask, "ew": EqualWeighting, "dwa": DWA, "uw": UncertaintyWeighting, "autol": AutoLambda,
    "pcgrad": PCGrad, "mgda": MGDA, "cagrad": CAGrad, "imtl": IMTL, "nash": NashMTL, "gradnorm": GradNorm,
    "sam": SAM, "pta": PTA,
}
for _name, _factory in _TABLE.items():
    METHODS.register(_name)(_factory)
# Row order of result tables: the baseline, loss weighting, gradient methods, comparisons.
TABLE_ORDER = list(_TABLE)


def method_options(name: str) -> dict[str, Any]:
    """Option name -> default value of a registered method."""
    signature = inspect.signature(METHODS.get(name))
    return {k: p.default for k, p in signature.parameters.items() if k != "num_tasks"}


def rep_grad_methods() -> list[str]:
    return [n for n in METHODS.names() if getattr(METHODS.get(n), "supports_rep_grad", False)]


def check_method_options(name: str, options: dict[str, Any]) -> None:
    """Unknown options, wrong types and --rep-grad where it does not apply raise a clear error."""
    if options.get("rep_grad") and name not in rep_grad_methods():
        raise InvalidChoiceError(
            f"--rep-grad applies to {', '.join(rep_grad_methods())} only (their papers take task gradients at "
            f"the shared representation); method {name!r} combines gradients of the encoder's parameters"
        )
    allowed = method_options(name)
    for key, value in options.items():
        if key not in allowed:
            known = ", ".join(allowed) if allowed else "none"
            raise InvalidChoiceError(f"method {name!r} has no option {key!r}; its options are: {known}")
        default = allowed[key]
        kind = type(default) if default is not None else str
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int) and not isinstance(value, bool))
        if not ok:
            raise InvalidChoiceError(
                f"The {key!r} option of method {name!r} must be a {kind.__name__}. Got {value!r} instead."
            )


def create_method(name: str, num_tasks: int, **options: Any) -> Method:
    check_method_options(name, options)
    return METHODS.get(name)(num_tasks, **options)


__all__ = [
    "METHODS", "Method", "LossWeighting", "GradientMethod", "ParamGroups", "EqualWeighting", "DWA",
    "UncertaintyWeighting", "AutoLambda", "PCGrad", "MGDA", "CAGrad", "IMTL", "NashMTL", "GradNorm", "SAM", "PTA",
    "SingleTask", "TABLE_ORDER", "create_method", "method_options", "check_method_options", "rep_grad_methods",
]
