"""PCGrad (Yu et al., NeurIPS 2020), paper Algorithm 1: for each task, in a fresh random order,
project against the *original* gradient of every other task it conflicts with; sum.

A zero gradient conflicts with nothing and nothing is projected onto it (the original's
projection would divide by its zero norm); the step's solve leaves such a task out
(`GradientMethod.solve`), which gives the same update."""

from __future__ import annotations

import torch

from repeval.training.methods.gradient import GradientMethod, combine_rows, gram_of_rows


def pcgrad_weights(gram: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """PCGrad in Gram space: projected row i is sum_j C[i, j] g_j, so its dot with g_j is
    (C M)[i, j]; the update sum_i g_i^PC has weights C.sum(0)."""
    return pcgrad_solve(gram, generator)[0]


def pcgrad_solve(gram: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """`pcgrad_weights` and the number of projections made."""
    k = len(gram)
    coef = torch.eye(k, dtype=gram.dtype)
    projections = 0
    for i in range(k):
        others = [j for j in torch.randperm(k, generator=generator).tolist() if j != i]
        for j in others:
            dot = coef[i] @ gram[:, j]
            if dot < 0 and gram[j, j] > 0:
                coef[i, j] -= dot / gram[j, j]
                projections += 1
    return coef.sum(dim=0), projections


def pcgrad(grads: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """PCGrad's update of the rows of `grads` [K, P], through the shared gradient path."""
    return combine_rows(pcgrad_weights(gram_of_rows(grads), generator), grads)


class PCGrad(GradientMethod):
    def __init__(self, num_tasks: int, seed: int = 0):
        super().__init__(num_tasks)
        self.generator = torch.Generator().manual_seed(seed)

    def weights(self, gram: torch.Tensor) -> torch.Tensor:
        weights, projections = pcgrad_solve(gram, self.generator)
        self.reported["projections"] = torch.tensor(float(projections))
        return weights

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
