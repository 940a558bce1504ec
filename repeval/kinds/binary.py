"""Binary maps: saliency and edges (the PASCAL-Context multi-task benchmark). The head predicts
one logit per pixel; targets are `[1, H, W]` floats, 1 foreground, 0 background, -1 ignore.

Loss: the balanced binary cross-entropy of the multi-task PASCAL code (Maninis et al.'s ASTMT and
Vandenhende et al.'s MTL survey code): positives weighted w, negatives 1 - w, summed over valid
pixels and divided by their number; w is the batch's fraction of negatives for saliency, and the
fixed 0.95 for edges (their `edge_w`).

Metrics come from additive statistics: a 100-bin histogram of the predicted probability of the
positive and of the negative valid pixels over the whole test set, so every threshold t in
{0.01, ..., 0.99} has global TP, FP and FN counts.
- saliency: maxF, the largest F_beta over thresholds with beta^2 = 0.3 (the saliency
  literature's), and max IoU over thresholds. The reference averages per-image scores; repeval
  counts pixels over the whole test set.
- edges: the test loss (what the reference code reports between its offline evaluations) and
  f_exact, the largest pixel-exact F1 over thresholds. The benchmark's odsF matches predicted and
  true edge pixels within a distance tolerance (the BSDS/SEISM toolbox, run offline on thinned
  predictions); f_exact has no tolerance and is not odsF: lower, but monotone in it for a fixed
  ground truth."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from repeval.kinds.base import HIGHER, LOWER, DenseKind, StreamingMetric, lifted

IGNORE = -1.0
BINS = 100


def balanced_bce(logits: torch.Tensor, target: torch.Tensor, positive_weight: float | None) -> torch.Tensor:
    """Mean over valid pixels of the class-balanced binary cross-entropy; `positive_weight` None
    takes the batch's fraction of negative pixels."""
    valid = target >= 0
    positive = (target > 0.5) & valid
    n_valid = valid.sum().clamp(min=1)
    w = (1.0 - positive.sum() / n_valid) if positive_weight is None else torch.tensor(positive_weight, device=logits.device)
    # log(sigmoid(x)) and log(1 - sigmoid(x)), stable
    log_p, log_not_p = F.logsigmoid(logits), F.logsigmoid(-logits)
    loss = -(w * log_p * positive + (1 - w) * log_not_p * (valid & ~positive))
    return loss.sum() / n_valid


class ThresholdCounts(StreamingMetric):
    """Histograms of the positive and negative valid pixels' probabilities (`[2, BINS]`), plus
    the summed loss (with a fixed positive weight only: a per-batch weight is not additive) and
    the number of valid pixels."""

    size = 2 * BINS + 2

    def __init__(self, kind: BinaryKind, device: torch.device | str = "cpu"):
        self.kind = kind
        super().__init__(device)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        valid = target >= 0
        n = valid.sum()
        if self.kind.positive_weight is not None:  # a fixed weight: the summed loss is additive
            self.state[-2] += self.kind.loss(pred.detach(), target).double() * n
        self.state[-1] += n
        prob = torch.sigmoid(pred)[valid]
        bins = (prob * BINS).long().clamp(0, BINS - 1)
        positive = (target[valid] > 0.5).long()
        self.state[: 2 * BINS] += torch.bincount(positive * BINS + bins, minlength=2 * BINS).double()

    def counts(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """TP, FP, FN at the thresholds k / BINS, k = 1..BINS-1 (predicted positive: p >= t)."""
        neg, pos = self.state[:BINS], self.state[BINS: 2 * BINS]
        above_pos = pos.flip(0).cumsum(0).flip(0)[1:]  # pixels in bins >= k
        above_neg = neg.flip(0).cumsum(0).flip(0)[1:]
        return above_pos, above_neg, pos.sum() - above_pos

    def f_beta(self, beta2: float) -> torch.Tensor:
        tp, fp, fn = self.counts()
        precision = tp / (tp + fp).clamp(min=1)
        recall = tp / (tp + fn).clamp(min=1)
        return (1 + beta2) * precision * recall / (beta2 * precision + recall).clamp(min=1e-12)


class BinaryKind(DenseKind):
    allowed_options: dict = {}
    positive_weight: float | None = None
    target_is_index = False
    invalid_value = IGNORE

    @property
    def outputs(self) -> int:
        return 1

    def valid(self, target: torch.Tensor) -> torch.Tensor:
        return target[:, 0] >= 0

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return balanced_bce(self.predict(output, target.shape[-2:]), lifted(target), self.positive_weight)

    def metric(self, device: torch.device | str = "cpu") -> ThresholdCounts:
        return ThresholdCounts(self, device)

    def target_problem(self, target: np.ndarray) -> str | None:
        bad = ~(((target >= 0) & (target <= 1)) | (target == IGNORE))  # NaN is bad too
        if bad.any():
            return f"{int(bad.sum())} values outside [0, 1] (e.g. {target[bad].flat[0]:.4g}); expected [0, 1] or {IGNORE:g} (ignore)"
        return None


class Saliency(BinaryKind):
    name = "saliency"
    directions = {"maxf": HIGHER, "max_iou": HIGHER}
    primary = "maxf"
    fractions = frozenset({"maxf", "max_iou"})

    def metric(self, device: torch.device | str = "cpu") -> ThresholdCounts:
        return _SaliencyMetric(self, device)


class _SaliencyMetric(ThresholdCounts):
    def compute(self) -> dict[str, float]:
        tp, fp, fn = self.counts()
        iou = tp / (tp + fp + fn).clamp(min=1)
        return {"maxf": float(self.f_beta(0.3).max()), "max_iou": float(iou.max())}


class Edges(BinaryKind):
    name = "edges"
    directions = {"loss": LOWER, "f_exact": HIGHER}
    primary = "loss"
    fractions = frozenset({"f_exact"})
    positive_weight = 0.95

    def metric(self, device: torch.device | str = "cpu") -> ThresholdCounts:
        return _EdgeMetric(self, device)


class _EdgeMetric(ThresholdCounts):
    def compute(self) -> dict[str, float]:
        n = float(self.state[-1])
        return {"loss": float(self.state[-2]) / n if n else float("nan"), "f_exact": float(self.f_beta(1.0).max())}
