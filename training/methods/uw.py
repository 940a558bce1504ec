"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018) in the form every public
implementation uses: sum_k (e^{-s_k} L_k + s_k) / 2 with learnable s_k = log sigma_k^2.
s starts at -0.5 (MTAN, LibMTL) and is optimised with the model's optimiser, so the run's
weight decay applies to it too (repeval's default weight decay is 0). At fixed L_k the
optimum is s_k = log L_k. A task without targets in a batch drops out of that step's sum, its
s_k term too: a loss of 0 is no observation of the task's noise, and would pull s_k down."""

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

    def combine(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        self.reported["weights"] = 0.5 * torch.exp(-self.log_var.detach())  # each loss's effective weight
        terms = 0.5 * (torch.exp(-self.log_var) * losses + self.log_var)
        return torch.where(present, terms, 0).sum()
