"""Equal weighting ("vanilla"): the sum of task losses, one backward. A task without targets in
a batch adds its loss of 0 (nothing)."""

from __future__ import annotations

import torch

from repeval.training.methods.base import LossWeighting


class EqualWeighting(LossWeighting):
    def combine(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return losses.sum()
