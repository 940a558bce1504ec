"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018) in the form every public
implementation uses: sum_k (e^{-s_k} L_k + s_k) / 2 with learnable s_k = log sigma_k^2.
s starts at -0.5 (MTAN, LibMTL) and is optimised with the model's optimiser, so the run's
weight decay applies to it too (repeval's default weight decay is 0). At fixed L_k the
optimum is s_k = log L_k."""

from __future__ import annotations

import torch

from repeval.training.methods.base import LearnsTaskScalars, LossWeighting


class UncertaintyWeighting(LearnsTaskScalars, LossWeighting):
    def __init__(self, num_tasks: int, init: float = -0.5):
        super().__init__(num_tasks)
        self.init_scalars(num_tasks, init)

    @property
    def log_var(self) -> torch.Tensor:
        return self.scalars

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        return 0.5 * (torch.exp(-self.log_var) * losses + self.log_var).sum()
