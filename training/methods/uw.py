"""Uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018) in the form every public
implementation uses: sum_k (e^{-s_k} L_k + s_k) / 2 with learnable s_k = log sigma_k^2.
s starts at -0.5 (MTAN, LibMTL) and is optimised with the model's optimiser, so the run's
weight decay applies to it too (repeval's default weight decay is 0). At fixed L_k the
optimum is s_k = log L_k."""

from __future__ import annotations

import torch

from repeval.training.methods.base import LossWeighting


class UncertaintyWeighting(LossWeighting):
    def __init__(self, num_tasks: int, init: float = -0.5):
        super().__init__(num_tasks)
        self.log_var = torch.full((num_tasks,), float(init), requires_grad=True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.log_var]

    def to(self, device: torch.device) -> UncertaintyWeighting:
        self.log_var = self.log_var.detach().to(device).requires_grad_(True)
        return self

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        return 0.5 * (torch.exp(-self.log_var) * losses + self.log_var).sum()

    def state_dict(self) -> dict:
        return {"log_var": self.log_var.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.log_var.copy_(state["log_var"])
