"""Per-pixel scalar regression: depth (0 = invalid, NYUv2 and MTAN's Cityscapes) and disparity
(-1 = invalid, Auto-lambda's Cityscapes, where 0 is a valid infinitely far pixel). Linear
outputs, no activation (as the reference networks); L1 loss over valid pixels."""

from __future__ import annotations

import numpy as np
import torch

from repeval.kinds.base import LOWER, DenseKind, StreamingMetric


class ErrorMetric(StreamingMetric):
    """Absolute (and relative) error over valid pixels.

    "global" (default): sums over every valid pixel of the test set, divided by their count.
    "batch": each batch's pixel mean, averaged with batch-size weights, which is what the
    Auto-lambda/DGR code reports (use it to compare with their published numbers)."""

    size = 6  # sum |e|, sum |e|/g, valid pixels, sum of batch means |e| * b, of |e|/g * b, images

    def __init__(self, invalid: float, relative: bool, reduce: str, device: torch.device | str = "cpu"):
        self.invalid, self.relative, self.reduce = invalid, relative, reduce
        super().__init__(device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        valid = target != self.invalid
        n = valid.sum().to(torch.float64)
        err = (pred - target).abs().to(torch.float64)
        abs_sum = torch.where(valid, err, 0).sum()
        rel_sum = torch.where(valid & (target != 0), err / target.abs().clamp_min(1e-12), 0).sum() if self.relative else abs_sum * 0
        b = target.shape[0]
        self.state += torch.stack([abs_sum, rel_sum, n, b * abs_sum / n.clamp_min(1), b * rel_sum / n.clamp_min(1),
                                   torch.tensor(float(b), dtype=torch.float64, device=n.device)])

    def compute(self) -> dict[str, float]:
        abs_sum, rel_sum, n, abs_b, rel_b, images = self.state.tolist()
        if self.reduce == "batch":
            out = {"abs_err": abs_b / max(images, 1.0), "rel_err": rel_b / max(images, 1.0)}
        else:
            out = {"abs_err": abs_sum / max(n, 1.0), "rel_err": rel_sum / max(n, 1.0)}
        return out if self.relative else {"abs_err": out["abs_err"]}


class Depth(DenseKind):
    name = "depth"
    directions = {"abs_err": LOWER, "rel_err": LOWER}
    primary = "abs_err"
    invalid = 0.0
    invalid_value = 0.0
    relative = True

    def scale_target(self, target: torch.Tensor, scale: float) -> torch.Tensor:
        # Zooming in by `scale` mimics a camera `scale` times closer (the reference divides too).
        return torch.where(target != self.invalid, target / scale, target)

    def valid(self, target: torch.Tensor) -> torch.Tensor:
        return target[:, 0] != self.invalid

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred = self.predict(output, target.shape[-2:])
        valid = (target != self.invalid).to(pred.dtype)
        return ((pred - target).abs() * valid).sum() / valid.sum().clamp_min(1)

    def metric(self, device: torch.device | str = "cpu") -> ErrorMetric:
        return ErrorMetric(self.invalid, self.relative, self.option("reduce"), device)

    def target_problem(self, target: np.ndarray) -> str | None:
        # Depth and disparity are distances or their inverse: >= 0 where measured.
        if not np.isfinite(target).all():
            return "non-finite values"
        negative = (target < 0) & (target != self.invalid)
        if negative.any():
            return f"negative values (min {target[negative].min():.4g}); expected >= 0, or {self.invalid:g} where invalid"
        return None


class Disparity(Depth):
    """Relative error is undefined where the disparity is a valid 0 (sky), so only abs_err."""

    name = "disparity"
    directions = {"abs_err": LOWER}
    invalid = -1.0
    invalid_value = -1.0
    relative = False

    def scale_target(self, target: torch.Tensor, scale: float) -> torch.Tensor:
        # Disparity is inverse depth: it grows with the zoom; invalid pixels stay -1.
        return torch.where(target != self.invalid, target * scale, target)
