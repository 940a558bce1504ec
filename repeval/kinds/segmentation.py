"""Semantic (and part) segmentation: per-pixel classes, -1 = ignore (the MTAN/Auto-lambda
layouts' rule); mIoU and pixel accuracy from the confusion matrix of the whole test set."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from repeval.kinds.base import HIGHER, DenseKind, StreamingMetric, class_id_problem

IGNORE = -1


class ConfusionMetric(StreamingMetric):
    """mIoU and pixel accuracy from the epoch's confusion matrix over valid pixels (0 <= gt < C).

    IoU_c = h_cc / (row_c + col_c - h_cc). A class absent from both ground truth and prediction
    has no IoU and is left out of the mean (the reference code's `torch.mean` would give NaN)."""

    def __init__(self, classes: int, device: torch.device | str = "cpu"):
        self.classes = classes
        self.size = classes * classes
        super().__init__(device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        c = self.classes
        labels = pred.argmax(1).flatten()
        target = target.flatten()
        valid = (target >= 0) & (target < c)
        index = torch.where(valid, target * c + labels, c * c)  # invalid pixels land in a spare bin
        self.state += torch.bincount(index, minlength=c * c + 1)[: c * c].to(torch.float64)

    def matrix(self) -> torch.Tensor:
        return self.state.view(self.classes, self.classes)

    def compute(self) -> dict[str, float]:
        h = self.matrix()
        diag = h.diag()
        union = h.sum(0) + h.sum(1) - diag
        present = union > 0
        iou = diag[present] / union[present]
        total = h.sum()
        return {
            "miou": float(iou.mean()) if len(iou) else float("nan"),
            "pixel_acc": float(diag.sum() / total) if total > 0 else float("nan"),
        }


class Segmentation(DenseKind):
    name = "segmentation"
    directions = {"miou": HIGHER, "pixel_acc": HIGHER}
    target_is_index = True
    primary = "miou"
    invalid_value = IGNORE
    fractions = frozenset({"miou", "pixel_acc"})

    def valid(self, target: torch.Tensor) -> torch.Tensor:
        return (target >= 0) & (target < self.outputs)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # The mean over valid pixels, as cross_entropy's own mean (bit for bit), except that a
        # batch without a valid pixel gives 0 with a zero gradient instead of 0 / 0 = NaN.
        summed = F.cross_entropy(self.predict(output, target.shape[-2:]), target, ignore_index=IGNORE, reduction="sum")
        return summed / (target != IGNORE).sum().clamp_min(1)

    def metric(self, device: torch.device | str = "cpu") -> ConfusionMetric:
        return ConfusionMetric(self.outputs, device)

    def target_problem(self, target: np.ndarray) -> str | None:
        return class_id_problem(target, self.outputs, IGNORE)
