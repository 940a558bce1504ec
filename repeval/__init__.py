"""repeval: multi-task encoders with and without Dummy Gradient norm Regularization (DGR),
and measurements of their shared representations.

Layers (imports point down only): `repeval` (this folder) is the core; `repeval.training` and
`repeval.probes` (folders `training/`, `probes/`) read it and never each other; `repeval.app`
(folder `app/`: CLI, demo) sits on top. The packaging maps the folders (pyproject.toml).
"""

__version__ = "0.1.0"
