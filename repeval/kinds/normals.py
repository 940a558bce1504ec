"""Surface normals: 3 channels, unit-normalised after upsampling. A pixel is valid when its
ground-truth components do not sum to 0 (the reference datasets' rule; invalid pixels are zero
vectors). Angle metrics: mean, median and the fractions within 11.25, 22.5 and 30 degrees."""

from __future__ import annotations

import math

import torch

from repeval.kinds.base import HIGHER, LOWER, REDUCTIONS, DenseKind, StreamingMetric

# The DGR/Auto-lambda code trains normals with L1 on the unit vectors; MTAN, LibMTL and
# Nash-MTL with 1 - cos. L1 is the default, for reproducing the DGR tables.
NORMAL_LOSSES = ("l1", "cosine")
THRESHOLDS = (11.25, 22.5, 30.0)
BIN = 0.01  # degrees per histogram bin: the median is exact to within 0.01 degree


def valid_mask(target: torch.Tensor) -> torch.Tensor:
    return target.sum(1) != 0


class AngleMetric(StreamingMetric):
    """Angle statistics from sums, exact counts and an angle histogram (for the median), all
    additive. "batch" reduction averages each batch's mean angle with batch-size weights (the
    Auto-lambda/DGR code); the median and thresholds are always global.

    State: [sum of angles, valid pixels, 3 threshold counts, sum of batch means * b, images,
    histogram of `BIN`-degree bins]."""

    bins = int(round(180 / BIN))
    size = 7 + bins

    def __init__(self, reduce: str, device: torch.device | str = "cpu"):
        self.reduce = reduce
        super().__init__(device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        valid = valid_mask(target)
        cos = (pred.double() * target.double()).sum(1).clamp(-1, 1)
        angle = torch.rad2deg(torch.acos(cos))
        n = valid.sum().to(torch.float64)
        total = torch.where(valid, angle, 0).sum()
        within = [(valid & (angle < t)).sum().to(torch.float64) for t in THRESHOLDS]
        b = torch.full_like(n, float(target.shape[0]))
        self.state[:7] += torch.stack([total, n, *within, b * total / n.clamp_min(1), b])
        index = torch.where(valid, (angle / BIN).long().clamp_(0, self.bins - 1), self.bins)
        self.state[7:] += torch.bincount(index.flatten(), minlength=self.bins + 1)[: self.bins].to(torch.float64)

    def compute(self) -> dict[str, float]:
        total, n, w1, w2, w3, batch_sum, images = self.state[:7].tolist()
        if n <= 0:
            return {k: math.nan for k in ("mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30")}
        cum = torch.cumsum(self.state[7:], 0)
        k = int(torch.searchsorted(cum, torch.tensor(n / 2, dtype=torch.float64, device=cum.device)))
        mean = batch_sum / max(images, 1.0) if self.reduce == "batch" else total / n
        return {"mean_angle": mean, "median_angle": (k + 0.5) * BIN,
                "within_11.25": w1 / n, "within_22.5": w2 / n, "within_30": w3 / n}


class Normals(DenseKind):
    name = "normals"
    directions = {"mean_angle": LOWER, "median_angle": LOWER, "within_11.25": HIGHER, "within_22.5": HIGHER,
                  "within_30": HIGHER}
    primary = "mean_angle"
    fractions = frozenset({"within_11.25", "within_22.5", "within_30"})
    allowed_options = {"reduce": REDUCTIONS, "loss": NORMAL_LOSSES}

    def valid(self, target: torch.Tensor) -> torch.Tensor:
        return valid_mask(target)

    def flip_target(self, target: torch.Tensor) -> torch.Tensor:
        # Mirroring the image mirrors the surfaces: the x component changes sign.
        return torch.cat([-target[:1], target[1:]])

    def predict(self, output: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        out = super().predict(output, size)
        # out / max(||out||, 1e-12) over the channel dim, in plain ops: F.normalize's
        # linalg.vector_norm is several times slower here (strided channels), twice over
        # in DGR's double backward.
        return out * (out * out).sum(1, keepdim=True).clamp_min(1e-24).rsqrt()

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred = self.predict(output, target.shape[-2:])
        valid = valid_mask(target).to(pred.dtype).unsqueeze(1)
        count = valid.sum().clamp_min(1)
        if self.option("loss") == "cosine":
            return 1 - (pred * target * valid).sum() / count
        return ((pred - target).abs() * valid).sum() / count

    def metric(self, device: torch.device | str = "cpu") -> AngleMetric:
        return AngleMetric(self.option("reduce"), device)
