"""GradNorm (Chen et al., ICML 2018), alpha = 1.5. Task weights w_k (start 1, learnable, in the
model's optimiser) train the model on sum_k w_k L_k, and are themselves trained on

    L_grad = sum_k | w_k ||grad_W L_k|| - mean_j(w_j ||grad_W L_j||) * r_k^alpha |,
    r_k = (L_k / L_k(0)) / mean_j (L_j / L_j(0)),

with the target (the second term) held constant; the weights are renormalised to sum K before
each step. W is the shared representation z (as LibMTL's representation-gradient mode): the
norms then cost K backward passes through the small heads only, and need no knowledge of which
encoder layer is "last". L_k(0) is the loss of the first step.

A task without targets in a batch (loss 0, zero gradient) is left out of that step's balancing:
the means run over the other tasks and its weight gets no gradient (its ratio would be 0 and
drag the common target down). Its L_k(0) is the loss of the first step where it has targets."""

from __future__ import annotations

from itertools import chain

import torch

from repeval.distributed import average_, average_gradients, sum_, world_size
from repeval.errors import check_number
from repeval.training.methods.base import LearnsTaskScalars, LossWeighting, ParamGroups, backward_with, presence


class GradNorm(LearnsTaskScalars, LossWeighting):
    def __init__(self, num_tasks: int, alpha: float = 1.5):
        super().__init__(num_tasks)
        check_number("GradNorm", "alpha", alpha, low=0.0)
        self.alpha = alpha
        self.init_scalars(num_tasks, 1.0)
        self.initial_losses: torch.Tensor | None = None

    def gradnorm_loss(self, losses: torch.Tensor, grad_norms: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
        """L_grad as a function of the weights (losses and norms detached), over the tasks
        `present` (all by default)."""
        present = presence(losses, present)
        count = present.sum().clamp_min(1)
        weighted = self.scalars * grad_norms
        ratio = torch.where(present, losses / self.initial_losses.clamp_min(1e-30), 0)
        mean_ratio = (ratio.sum() / count).clamp_min(1e-30)
        target = torch.where(present, weighted, 0).sum() / count * (ratio / mean_ratio) ** self.alpha
        return torch.where(present, (weighted - target.detach()).abs(), 0).sum()

    def record_initial_losses(self, losses: torch.Tensor, present: torch.Tensor) -> None:
        """L_k(0): each task's loss at the first step where it has targets (the global batch's
        mean under torchrun); NaN until then. No host sync."""
        if self.initial_losses is None:
            self.initial_losses = torch.full_like(losses, float("nan"))
        value, count = torch.where(present, losses, 0), present.to(losses.dtype)
        if world_size() > 1:
            value, count = sum_(value.clone()), sum_(count)
        self.initial_losses = torch.where(torch.isnan(self.initial_losses), value / count, self.initial_losses)

    def backward(self, losses: torch.Tensor, z: torch.Tensor, z_grad: torch.Tensor | None, params: ParamGroups,
                 present: torch.Tensor | None = None) -> None:
        present = presence(losses, present)
        with torch.no_grad():
            self.scalars.mul_(len(self.scalars) / self.scalars.sum())
        self.record_initial_losses(losses.detach(), present)
        grad_norms = torch.stack([
            torch.linalg.vector_norm(torch.autograd.grad(losses[k], z, retain_graph=True)[0]) for k in range(len(losses))
        ]).float()
        if world_size() > 1:  # over the global batch: squared norms add up (each rank's loss is a 1/R share)
            grad_norms = sum_(grad_norms.pow(2)).sqrt() / world_size()
            losses_now = losses.detach().clone()
            average_([losses_now])
        else:
            losses_now = losses.detach()
        (self.scalars.grad,) = torch.autograd.grad(self.gradnorm_loss(losses_now, grad_norms, present), self.scalars)
        self.reported["weights"] = self.scalars.detach().clone()  # before the optimiser moves them
        backward_with((self.reported["weights"] * losses).sum(), z, z_grad)
        average_gradients(chain(params.all(), self.parameters()))

    def state_dict(self) -> dict:
        return {**super().state_dict(), "initial_losses": self.initial_losses}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.initial_losses = state["initial_losses"]
