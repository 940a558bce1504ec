"""Task kinds by name. A kind is the one place that knows what a task's target looks like: its
head, its loss with the dataset's ignore rule, its streaming metrics and their directions.
The loop, the methods, DGR, reports and Delta_MTL talk to tasks only through `TaskKind`.

Names are registered lazily, so listing or checking them imports no torch. Adding a kind is one
module with a `TaskKind` subclass and one line here; registry-parametrised tests pick it up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from repeval.registry import Registry

if TYPE_CHECKING:
    from repeval.kinds.base import TaskKind
    from repeval.tasks import TaskSpec

KINDS: Registry[type[TaskKind]] = Registry("task kind")
KINDS.register_lazy("classification", "repeval.kinds.classification:Classification",
                    summary="one label per image: two-layer head, cross-entropy, accuracy",
                    reference="the DGR paper's UTKFace heads (Shin, Do & Son, 2024)")
KINDS.register_lazy("segmentation", "repeval.kinds.segmentation:Segmentation",
                    summary="per-pixel classes (-1 ignored): DeepLabv3 head, cross-entropy, mIoU and pixel accuracy",
                    reference="Auto-lambda / DGR scene code")
KINDS.register_lazy("depth", "repeval.kinds.regression:Depth",
                    summary="per-pixel depth (0 invalid): L1 over valid pixels, abs and rel error",
                    reference="MTAN / Auto-lambda NYUv2 code")
KINDS.register_lazy("disparity", "repeval.kinds.regression:Disparity",
                    summary="per-pixel disparity (-1 invalid, 0 a far pixel): L1, abs error",
                    reference="Auto-lambda's Cityscapes code")
KINDS.register_lazy("normals", "repeval.kinds.normals:Normals",
                    summary="surface normals: L1 (or 1 - cos) on unit vectors, angle statistics",
                    reference="Auto-lambda / DGR (L1); MTAN, LibMTL (cosine)")
KINDS.register_lazy("saliency", "repeval.kinds.binary:Saliency",
                    summary="binary saliency (-1 ignored): balanced BCE, maxF and max IoU",
                    reference="ASTMT (Maninis et al., CVPR 2019) / MTL survey code")
KINDS.register_lazy("edges", "repeval.kinds.binary:Edges",
                    summary="binary edges (-1 ignored): balanced BCE (w = 0.95), loss and pixel-exact F1",
                    reference="ASTMT (Maninis et al., CVPR 2019) / MTL survey code")


def kind_of(spec: TaskSpec) -> TaskKind:
    """The kind object of a task (its options checked).

    >>> from repeval.tasks import TaskSpec
    >>> kind_of(TaskSpec("depth", 1, kind="depth")).directions
    {'abs_err': 'lower', 'rel_err': 'lower'}
    """
    return KINDS.get(spec.kind)(spec)


def list_kinds() -> list[str]:
    return KINDS.names()


def metric_info(metric: str) -> tuple[str, bool]:
    """(direction, shown in %) of a metric name, from the registered kinds that report it.

    >>> metric_info("miou"), metric_info("abs_err")
    (('higher', True), ('lower', False))
    """
    for name in KINDS.names():
        kind = KINDS.get(name)
        if metric in kind.directions:
            return kind.directions[metric], metric in kind.fractions
    raise KeyError(f"no registered task kind reports a metric {metric!r}")


__all__ = ["KINDS", "kind_of", "list_kinds", "metric_info"]
