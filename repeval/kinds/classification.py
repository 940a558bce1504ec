"""Classification: one class label per image; a two-layer head on the pooled representation."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from repeval.heads import HeadConfig, mlp_head
from repeval.kinds.base import HIGHER, StreamingMetric, TaskKind, class_id_problem, lifted


class Accuracy(StreamingMetric):
    size = 2  # correct, seen

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        self.state[0] += (pred.argmax(1) == target).sum()
        self.state[1] += target.numel()

    def compute(self) -> dict[str, float]:
        correct, seen = self.state.tolist()
        return {"accuracy": correct / max(seen, 1.0)}


class Classification(TaskKind):
    name = "classification"
    directions = {"accuracy": HIGHER}
    target_is_index = True
    primary = "accuracy"
    fractions = frozenset({"accuracy"})
    per_image_labels = True

    def build_head(self, in_channels: int, config: HeadConfig, map_side: int | None = None) -> nn.Module:
        head = mlp_head(in_channels, config.hidden, self.outputs, config.logit_relu)
        # On a feature map (a dense encoder shared with dense tasks) the head reads its global average.
        return head if map_side is None else nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(lifted(output), target)

    def metric(self, device: torch.device | str = "cpu") -> Accuracy:
        return Accuracy(device)

    def target_problem(self, target: np.ndarray) -> str | None:
        return class_id_problem(target, self.outputs, None)
