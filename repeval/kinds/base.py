"""What every task kind provides (see `repeval.kinds`)."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from repeval.errors import InvalidChoiceError
from repeval.heads import HeadConfig, aspp_rates, deeplab_head
from repeval.tasks import TaskSpec

HIGHER, LOWER = "higher", "lower"
REDUCTIONS = ("global", "batch")


def lifted(x: torch.Tensor) -> torch.Tensor:
    """bf16/fp16 outputs (autocast) in float32 for the loss; float64 stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class StreamingMetric:
    """Metric statistics accumulated over a whole epoch in one float64 tensor `state` (sums and
    counts, exact for any realistic count): adding the states of two halves of a test set, or
    all-reducing them over ranks, gives the metrics of the whole. `update` never syncs the host."""

    size: int

    def __init__(self, device: torch.device | str = "cpu"):
        self.state = torch.zeros(self.size, dtype=torch.float64, device=device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        raise NotImplementedError

    def compute(self) -> dict[str, float]:
        raise NotImplementedError


class TaskKind:
    """A task's kind, bound to its spec. Subclasses set the class attributes and implement
    `build_head`, `loss` and `metric`; dense kinds inherit `DenseKind`."""

    name: ClassVar[str]
    directions: ClassVar[dict[str, str]]  # metric -> "higher" or "lower" (is better)
    primary: ClassVar[str]  # the metric of per-task Delta_MTL (the DGR tables' choice); computed first
    fractions: ClassVar[frozenset[str]] = frozenset()  # metrics in [0, 1], shown in %
    dense: ClassVar[bool] = False  # reads a feature map and predicts a map
    per_image_labels: ClassVar[bool] = False  # one class label per image (what per-image probes need)
    # option -> allowed values, the default first
    allowed_options: ClassVar[dict[str, tuple]] = {}

    def __init__(self, spec: TaskSpec):
        self.spec = spec
        for key, value in spec.options:
            allowed = self.allowed_options.get(key)
            if allowed is None:
                names = ", ".join(self.allowed_options) or "none"
                raise InvalidChoiceError(f"task kind {self.name!r} has no option {key!r}; its options are: {names}")
            if value not in allowed:
                raise InvalidChoiceError(
                    f"The {key!r} option of task kind {self.name!r} must be one of {', '.join(map(str, allowed))}. "
                    f"Got {value!r} instead."
                )

    def option(self, key: str) -> Any:
        return self.spec.option(key, self.allowed_options[key][0])

    @property
    def outputs(self) -> int:
        return self.spec.num_classes

    def build_head(self, in_channels: int, config: HeadConfig, map_side: int | None = None) -> nn.Module:
        raise NotImplementedError

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """The prediction a head's raw `output` stands for, at the target's `size` (dense kinds)."""
        return output

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Batch loss of a head's raw output against the target (ignore rule included): the
        mean over valid samples or pixels, and exactly 0 with a zero gradient when the batch has
        none (a PASCAL batch without a person), never 0 / 0."""
        raise NotImplementedError

    def valid(self, target: torch.Tensor) -> torch.Tensor:
        """The ignore rule: which samples (or pixels, `[B, H, W]`) of a target count."""
        return torch.ones(target.shape[:1], dtype=torch.bool, device=target.device)

    def present(self, target: torch.Tensor) -> torch.Tensor:
        """Whether the batch's target has anything to learn (a 0-d bool tensor; no host sync)."""
        return self.valid(target).any()

    def metric(self, device: torch.device | str = "cpu") -> StreamingMetric:
        raise NotImplementedError

    def target_problem(self, target: np.ndarray) -> str | None:
        """What is wrong with the values of one sample's target as a dataset loaded it (None:
        nothing); its shape is the dataset's check. Datasets call it on every sample they read."""
        return None if np.isfinite(target).all() else "non-finite values"

    # Joint augmentation of dense samples (`repeval.datasets.dense.augment`).
    invalid_value: ClassVar[float] = 0.0  # what padding a target map fills in
    target_is_index: ClassVar[bool] = False  # targets are class indices ([B] or [B, H, W]), not [B, C, H, W] values

    def flip_target(self, target: torch.Tensor) -> torch.Tensor:
        """A target already mirrored left-right, made consistent with the mirrored image."""
        return target

    def scale_target(self, target: torch.Tensor, scale: float) -> torch.Tensor:
        """A target of a sample zoomed in by `scale` (a closer camera)."""
        return target


def class_id_problem(target: np.ndarray, classes: int, ignore: int | None) -> str | None:
    """Class ids outside 0..classes-1 (and not the `ignore` value), described; None when all fit."""
    if target.dtype.kind == "f" and not (np.isfinite(target) & (target == np.round(target))).all():
        return "values that are not whole numbers (class ids)"
    bad = (target < 0) | (target >= classes)
    if ignore is not None:
        bad &= target != ignore
    if not bad.any():
        return None
    found = target[bad]
    allowed = f"0..{classes - 1}" + ("" if ignore is None else f" or {ignore} (ignore)")
    return f"class ids {found.min()}..{found.max()} ({int(bad.sum())} values); expected {allowed}"


class DenseKind(TaskKind):
    """Dense kinds: a DeepLabv3 head on the encoder's feature map; its output is upsampled to
    the target's size (bilinear, `align_corners=True`, as the reference networks do)."""

    dense = True
    allowed_options = {"reduce": REDUCTIONS}

    def build_head(self, in_channels: int, config: HeadConfig, map_side: int | None = None) -> nn.Module:
        rates = config.rates or aspp_rates(map_side or 32)
        return deeplab_head(in_channels, self.outputs, config.width, tuple(rates))

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        output = lifted(output)
        if size is not None and tuple(output.shape[-2:]) != tuple(size):
            output = F.interpolate(output, size=tuple(size), mode="bilinear", align_corners=True)
        return output
