"""SAM (Foret et al., ICLR 2021) around a base method (`base`, default `ew`, i.e. SAM on the sum
of task losses; the paper's Figure 2 also puts it on Auto-lambda, CAGrad and Nash-MTL):
1. the base method's update g at the parameters w (this pass updates batch-norm statistics);
2. ascend to w + e with e = rho * g / ||g|| (one norm over every trained parameter, rho = 0.05);
3. the base method's update at w + e, with batch-norm statistics left untouched (they move once
   per step);
4. restore w exactly (a saved copy, not w + e - e) and step the optimiser with that update.
DGR, when on, is part of both passes. The base combines gradients in both passes, so its state
(PCGrad's generator, Nash-MTL's step count) advances twice per step.
Cost: two forward and two backward passes of the base method per step."""

from __future__ import annotations

import torch

from repeval.errors import check_number
from repeval.training.methods.base import Pass, StepContext, WrapsMethod, buffers_unchanged


def sam_perturbation(grads: list[torch.Tensor], rho: float) -> list[torch.Tensor]:
    """e = rho * g / ||g|| over all tensors together (+1e-12 as the original, so g = 0 gives e = 0)."""
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    scale = rho / (norm + 1e-12)
    return [g * scale for g in grads]


class SAM(WrapsMethod):
    def __init__(self, num_tasks: int, rho: float = 0.05, base: str = "ew"):
        super().__init__(num_tasks, base=base)
        check_number("SAM", "rho", rho, low=0.0)
        self.rho = rho

    def step(self, ctx: StepContext) -> Pass:
        self.prepare(ctx)
        first = ctx.forward(ctx.batch)
        ctx.optimizer.zero_grad(set_to_none=True)
        self.base.backward(first.losses, first.z, first.z_grad, ctx.params, first.present)
        trained = [p for p in [*ctx.params.shared, *ctx.params.common, *(q for h in ctx.params.heads for q in h)] if p.grad is not None]
        saved = [p.detach().clone() for p in trained]
        with torch.no_grad():
            for p, e in zip(trained, sam_perturbation([p.grad for p in trained], self.rho)):
                p.add_(e)
        with buffers_unchanged(ctx.model):
            second = ctx.forward(ctx.batch)
            ctx.optimizer.zero_grad(set_to_none=True)
            self.base.backward(second.losses, second.z, second.z_grad, ctx.params, second.present)
        with torch.no_grad():
            for p, w in zip(trained, saved):
                p.copy_(w)
        ctx.optimizer.step()
        return first
