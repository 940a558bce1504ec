"""PCGrad (Yu et al., NeurIPS 2020), paper Algorithm 1: for each task, in a fresh random order,
project against the *original* gradient of every other task it conflicts with; sum."""

from __future__ import annotations

import torch

from repeval.training.methods.gradient import GradientMethod


def pcgrad(grads: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    projected = grads.clone()
    k = len(grads)
    for i in range(k):
        others = [j for j in torch.randperm(k, generator=generator).tolist() if j != i]
        for j in others:
            dot = projected[i] @ grads[j]
            norm_sq = grads[j] @ grads[j]
            if dot < 0 and norm_sq > 0:
                projected[i] -= dot / norm_sq * grads[j]
    return projected.sum(dim=0)


class PCGrad(GradientMethod):
    def __init__(self, num_tasks: int, seed: int = 0):
        super().__init__(num_tasks)
        self.generator = torch.Generator().manual_seed(seed)

    def aggregate(self, grads: torch.Tensor) -> torch.Tensor:
        return pcgrad(grads, self.generator)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
