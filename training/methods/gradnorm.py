"""GradNorm (Chen et al., ICML 2018), alpha = 1.5. Task weights w_k (start 1, learnable, in the
model's optimiser) train the model on sum_k w_k L_k, and are themselves trained on

    L_grad = sum_k | w_k ||grad_W L_k|| - mean_j(w_j ||grad_W L_j||) * r_k^alpha |,
    r_k = (L_k / L_k(0)) / mean_j (L_j / L_j(0)),

with the target (the second term) held constant; the weights are renormalised to sum K before
each step. W is the shared representation z (as LibMTL's representation-gradient mode): the
norms then cost K backward passes through the small heads only, and need no knowledge of which
encoder layer is "last". L_k(0) is the loss of the first step."""

from __future__ import annotations

from itertools import chain

import torch

from repeval.distributed import average_, average_gradients, sum_, world_size
from repeval.errors import check_number
from repeval.training.methods.base import LearnsTaskScalars, LossWeighting, ParamGroups, backward_with


class GradNorm(LearnsTaskScalars, LossWeighting):
    def __init__(self, num_tasks: int, alpha: float = 1.5):
        super().__init__(num_tasks)
        check_number("GradNorm", "alpha", alpha, low=0.0)
        self.alpha = alpha
        self.init_scalars(num_tasks, 1.0)
        self.initial_losses: torch.Tensor | None = None

    def gradnorm_loss(self, losses: torch.Tensor, grad_norms: torch.Tensor) -> torch.Tensor:
        """L_grad as a function of the weights (losses and norms detached)."""
        weighted = self.scalars * grad_norms
        ratio = losses / self.initial_losses
        target = weighted.mean() * (ratio / ratio.mean()) ** self.alpha
        return (weighted - target.detach()).abs().sum()

    def backward(self, losses: torch.Tensor, z: torch.Tensor, z_grad: torch.Tensor | None, params: ParamGroups) -> None:
        with torch.no_grad():
            self.scalars.mul_(len(self.scalars) / self.scalars.sum())
        if self.initial_losses is None:
            self.initial_losses = losses.detach().clone()
            average_([self.initial_losses])
        grad_norms = torch.stack([
            torch.linalg.vector_norm(torch.autograd.grad(losses[k], z, retain_graph=True)[0]) for k in range(len(losses))
        ]).float()
        if world_size() > 1:  # over the global batch: squared norms add up (each rank's loss is a 1/R share)
            grad_norms = sum_(grad_norms.pow(2)).sqrt() / world_size()
            losses_now = losses.detach().clone()
            average_([losses_now])
        else:
            losses_now = losses.detach()
        (self.scalars.grad,) = torch.autograd.grad(self.gradnorm_loss(losses_now, grad_norms), self.scalars)
        backward_with((self.scalars.detach() * losses).sum(), z, z_grad)
        average_gradients(chain(params.all(), self.parameters()))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "initial_losses": self.initial_losses}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.initial_losses = state["initial_losses"]
