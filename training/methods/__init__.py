"""Multi-task methods by name; `--method` choices come from `METHODS`.

A method's options are its constructor's keyword arguments (after `num_tasks`); `--method-option
KEY=VALUE` and sweep files set them, checked against `method_options(name)`."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from repeval.errors import InvalidChoiceError
from repeval.registry import Registry
from repeval.validation import check_options

if TYPE_CHECKING:
    from repeval.training.methods.base import Method

METHODS: Registry[Callable[..., Any]] = Registry("method")
# name -> (module, class, takes --rep-grad). Lazy, so the CLI lists them without importing torch.
_TABLE = {
    "single": ("single", "SingleTask", False), "ew": ("ew", "EqualWeighting", False), "dwa": ("dwa", "DWA", False),
    "uw": ("uw", "UncertaintyWeighting", False), "autol": ("autol", "AutoLambda", False),
    "pcgrad": ("pcgrad", "PCGrad", False), "mgda": ("mgda", "MGDA", True), "cagrad": ("cagrad", "CAGrad", False),
    "imtl": ("imtl", "IMTL", True), "nash": ("nash", "NashMTL", False), "gradnorm": ("gradnorm", "GradNorm", False),
    "sam": ("sam", "SAM", False), "pta": ("pta", "PTA", False),
}
for _name, (_module, _class, _rep_grad) in _TABLE.items():
    METHODS.register_lazy(_name, f"{__name__}.{_module}:{_class}", rep_grad=_rep_grad)
# Row order of result tables: the baseline, loss weighting, gradient methods, comparisons.
TABLE_ORDER = list(_TABLE)
_CLASSES = {cls: f"{__name__}.{module}" for module, cls, _ in _TABLE.values()}
_CLASSES.update(Method=f"{__name__}.base", LossWeighting=f"{__name__}.base", ParamGroups=f"{__name__}.base",
                GradientMethod=f"{__name__}.gradient")


def __getattr__(name: str) -> Any:
    if name in _CLASSES:
        return getattr(importlib.import_module(_CLASSES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def method_options(name: str) -> dict[str, Any]:
    """Option name -> default value of a registered method."""
    signature = inspect.signature(METHODS.get(name))
    return {k: p.default for k, p in signature.parameters.items() if k != "num_tasks"}


def rep_grad_methods() -> list[str]:
    """Methods that accept `--rep-grad` (their class says `supports_rep_grad`; a test keeps the two equal)."""
    return [n for n in METHODS.names() if METHODS.meta(n)["rep_grad"]]


def check_method_options(name: str, options: dict[str, Any]) -> None:
    """Unknown options, wrong types and --rep-grad where it does not apply raise a clear error."""
    if options.get("rep_grad") and name not in rep_grad_methods():
        raise InvalidChoiceError(
            f"--rep-grad applies to {', '.join(rep_grad_methods())} only (their papers take task gradients at "
            f"the shared representation); method {name!r} combines gradients of the encoder's parameters"
        )
    check_options("method", name, options, method_options(name))


def create_method(name: str, num_tasks: int, **options: Any) -> Method:
    check_method_options(name, options)
    return METHODS.get(name)(num_tasks, **options)


__all__ = [
    "METHODS", "Method", "LossWeighting", "GradientMethod", "ParamGroups", "EqualWeighting", "DWA",
    "UncertaintyWeighting", "AutoLambda", "PCGrad", "MGDA", "CAGrad", "IMTL", "NashMTL", "GradNorm", "SAM", "PTA",
    "SingleTask", "TABLE_ORDER", "create_method", "method_options", "check_method_options", "rep_grad_methods",
]
