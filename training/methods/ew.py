"""Equal weighting ("vanilla"): the sum of task losses, one backward."""

from __future__ import annotations

import torch

from repeval.training.methods.base import LossWeighting


class EqualWeighting(LossWeighting):
    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        return losses.sum()
