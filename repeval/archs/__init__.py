"""Multi-task architectures by name (`--arch`). An architecture turns a timm backbone into the
encoder of a `MultiTaskModel`, and fixes three sets the rest of repeval reads:

| arch | shared parameters (what gradient methods combine) | z (what task heads, DGR's dummy heads and representation-gradient methods read) | probe / universality features |
|---|---|---|---|
| split | the whole backbone | the backbone's last feature map (dense) or pooled vector, one for all tasks | z |
| mtan | the backbone, plus the shared attention bottlenecks with `shared=blocks` (default) | per task: the attended last-stage feature a4^t = mask4^t * u4, stacked `[K, B, ...]` | the backbone's last-stage output u4 (what every task's attention selects from) |

SPLIT is hard parameter sharing (the paper's SPLIT; Auto-lambda's `MTLDeepLabv3`). MTAN (Liu et
al., CVPR 2019) in the ResNet form of Auto-lambda/DGR's `MTANDeepLabv3`: task attention on the
last block of every backbone stage (`repeval.archs.mtan`).

The encoder contract (duck-typed: a SPLIT encoder is the timm model itself, so its weights keep
timm's names): `num_features`; `forward(x) -> z`; optionally `per_task = True` (z stacked per
task, head k reads `z[k]`), `shared_parameters()`, `task_parameters(k)` (trained by task k
alone), `common_parameters()` (neither: they get the plain sum of the task gradients) and
`probe_view()` (a module giving the probe features). Defaults: shared = all, none task-only.

Registered lazily with each architecture's options (`meta`), so the CLI and configs check names
and options without importing torch."""

from __future__ import annotations

from repeval.errors import InvalidChoiceError
from repeval.registry import Registry

ARCHS: Registry = Registry("architecture")
ARCHS.register_lazy("split", "repeval.archs.split:build_split", options={},
                    summary="hard parameter sharing: one backbone, one head per task",
                    reference="the DGR paper's SPLIT; Auto-lambda's MTLDeepLabv3")
# shared: "blocks" = Auto-lambda's shared_modules() (which DGR's code inherits for its gradient
# methods): backbone + shared attention bottlenecks; "backbone" = LibMTL's get_share_params()
# (and the set DGR's code sends its own gradient to).
ARCHS.register_lazy("mtan", "repeval.archs.mtan:build_mtan", options={"shared": ("blocks", "backbone")},
                    summary="task attention on the last block of every backbone stage",
                    reference="Liu, Johns & Davison, CVPR 2019; Auto-lambda / DGR's MTANDeepLabv3")


def list_archs() -> list[str]:
    return ARCHS.names()


def check_arch(name: str, options: dict) -> None:
    """Refuse an unknown architecture or option value, torch-free.

    >>> check_arch("mtan", {"shared": "all"})
    Traceback (most recent call last):
    ...
    repeval.errors.InvalidChoiceError: The 'shared' option of arch 'mtan' must be one of blocks, backbone. Got 'all' instead.
    """
    ARCHS.check(name)
    allowed = ARCHS.meta(name)["options"]
    for key, value in options.items():
        if key not in allowed:
            names = ", ".join(allowed) or "none"
            raise InvalidChoiceError(f"arch {name!r} has no option {key!r}; its options: {names}")
        if value not in allowed[key]:
            raise InvalidChoiceError(
                f"The {key!r} option of arch {name!r} must be one of {', '.join(allowed[key])}. Got {value!r} instead."
            )


def build_arch_encoder(name: str, backbone: str, *, num_tasks: int, in_chans: int = 3, dense: bool = False,
                       input_size: tuple[int, int] | None = None, pretrained_file=None, options: dict | None = None):
    """The encoder of architecture `name` on timm backbone `backbone`."""
    options = dict(options or {})
    check_arch(name, options)
    return ARCHS.get(name)(backbone, num_tasks=num_tasks, in_chans=in_chans, dense=dense, input_size=input_size,
                           pretrained_file=pretrained_file, **options)


__all__ = ["ARCHS", "build_arch_encoder", "check_arch", "list_archs"]
