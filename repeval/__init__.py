"""repeval: multi-task encoders with and without Dummy Gradient norm Regularization (DGR),
and measurements of their shared representations."""

from pathlib import Path as _Path

__version__ = "0.1.0"

# `training/` and `probes/` sit beside this folder in a source checkout and install as
# `repeval.training` / `repeval.probes`. When Python runs from the checkout's root, this folder
# shadows the installed package, so let the sub-package search look beside it as well.
_checkout = _Path(__file__).resolve().parent.parent
if (_checkout / "training" / "__init__.py").is_file():
    __path__.append(str(_checkout))  # noqa: F821 - __path__ is defined for packages
