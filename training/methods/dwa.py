"""Dynamic Weight Average (Liu, Johns & Davison, MTAN, CVPR 2019), epoch-level as in MTAN:
w_k = L_k(t-1) / L_k(t-2) from the *unweighted* epoch-mean training losses, weights
K softmax(w / T) with T = 2, all 1 for the first two epochs; they sum to K. An epoch mean is over
the batches where the task had targets; a task with none in one of the two epochs (a NaN mean)
gets the ratio 1, the no-change value, instead of a NaN weight."""

from __future__ import annotations

import torch

from repeval.errors import check_number
from repeval.training.methods.base import LossWeighting


def dwa_weights(previous: torch.Tensor, before: torch.Tensor, temperature: float) -> torch.Tensor:
    ratios = previous / before
    ratios = torch.where(torch.isfinite(ratios), ratios, torch.ones_like(ratios))
    return len(ratios) * torch.softmax(ratios / temperature, dim=0)


class DWA(LossWeighting):
    def __init__(self, num_tasks: int, temperature: float = 2.0):
        super().__init__(num_tasks)
        check_number("DWA", "temperature", temperature, low=0.0, low_open=True)
        self.temperature = temperature
        self.history: list[torch.Tensor] = []
        self.weights = torch.ones(num_tasks)

    def combine(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        self.reported["weights"] = self.weights
        return (self.weights.to(losses.device) * losses).sum()

    def on_epoch_end(self, epoch: int, mean_losses: torch.Tensor) -> None:
        self.history = [*self.history[-1:], mean_losses.detach().cpu().double()]
        if len(self.history) == 2:  # weights for the epoch after next use the last two epochs
            self.weights = dwa_weights(self.history[1], self.history[0], self.temperature).float()

    def state_dict(self) -> dict:
        return {"history": list(self.history), "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.weights = list(state["history"]), state["weights"]
