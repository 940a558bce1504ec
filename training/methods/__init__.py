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
# name -> (module, class, takes --rep-grad, summary, reference). Lazy: the CLI lists them
# without importing torch.
_TABLE = {
    "single": ("single", "SingleTask", False, "trains one task alone: the Delta_MTL baseline",
               "single-task learning; Delta_MTL of Maninis et al., CVPR 2019"),
    "ew": ("ew", "EqualWeighting", False, "equal weighting: the sum of task losses", "the usual baseline (\"vanilla\")"),
    "dwa": ("dwa", "DWA", False, "Dynamic Weight Average: weights from each task's epoch loss ratio",
            "Liu, Johns & Davison, CVPR 2019 (MTAN)"),
    "uw": ("uw", "UncertaintyWeighting", False, "uncertainty weighting: a learned log-variance per task",
           "Kendall, Gal & Cipolla, CVPR 2018"),
    "autol": ("autol", "AutoLambda", False, "Auto-lambda: task weights meta-learned on a second batch",
              "Liu, Johns & Davison, TMLR 2022"),
    "pcgrad": ("pcgrad", "PCGrad", False, "projects each task gradient off the ones it conflicts with",
               "Yu et al., NeurIPS 2020"),
    "mgda": ("mgda", "MGDA", True, "the min-norm point of the task gradients' convex hull",
             "Sener & Koltun, NeurIPS 2018"),
    "cagrad": ("cagrad", "CAGrad", False, "the best worst-task improvement near the mean gradient",
               "Liu et al., NeurIPS 2021"),
    "imtl": ("imtl", "IMTL", True, "equal projections on every task gradient (IMTL-G), learned loss scales (IMTL-L)",
             "Liu et al., ICLR 2021"),
    "nash": ("nash", "NashMTL", False, "Nash bargaining weights: (G G^T) a = 1/a, update clipped",
             "Navon et al., ICML 2022"),
    "gradnorm": ("gradnorm", "GradNorm", False, "weights that balance the tasks' gradient norms at z",
                 "Chen et al., ICML 2018"),
    "sam": ("sam", "SAM", False, "sharpness-aware minimisation around a base method", "Foret et al., ICLR 2021"),
    "pta": ("pta", "PTA", False, "pseudo-task augmentation: several decoders per task around a base method",
            "Meyerson & Miikkulainen, ICML 2018"),
}
for _name, (_module, _class, _rep_grad, _summary, _reference) in _TABLE.items():
    METHODS.register_lazy(_name, f"{__name__}.{_module}:{_class}", summary=_summary, reference=_reference,
                          rep_grad=_rep_grad)
# Row order of result tables: the baseline, loss weighting, gradient methods, comparisons.
TABLE_ORDER = list(_TABLE)
_CLASSES = {cls: f"{__name__}.{module}" for module, cls, *_ in _TABLE.values()}
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
