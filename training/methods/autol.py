"""Auto-lambda (Liu, Johns & Davison, TMLR 2022): task weights lambda (initialised to 0.1) are
meta-learned by their own Adam (lr 1e-4) to lower the loss of every task on a second training
batch after one virtual SGD step of the model:

    w' = w - a (grad_w sum_k lambda_k L_k(w; train) + weight_decay * w)        (a: current lr)
    dL_meta(w')/dlambda_k = -a grad L_meta(w') . grad_w L_k(w; train)

The mixed derivative is taken by central finite differences, as in the original: with
d = grad L_meta(w') and r = 0.01 / ||d||, grad_w L_k . d ~ [L_k(w + r d) - L_k(w - r d)] / 2r,
two forward passes. Every weight is updated every step; the model then trains on
sum_k lambda_k L_k (DGR added after, unweighted).

The meta batch is the training set in an independent order (the authors' "copy of the train
loader"). Meta passes run the model functionally and leave batch-norm statistics untouched.
Cost per step: 3 forward+backward passes and 2 forward passes (about 3.5-4x `ew`). The virtual
step is plain SGD whatever the model's optimiser is, as in the original with Adam. A task without
targets in the training batch has a hypergradient of 0 (its loss is 0 on both sides of the
difference), as it would in the original."""

from __future__ import annotations

from collections.abc import Callable

import torch

from repeval.distributed import average_
from repeval.errors import check_number
from repeval.training.methods.base import LossWeighting, StepContext, buffers_unchanged

LossesFn = Callable[[object, dict[str, torch.Tensor]], torch.Tensor]


def autol_hypergradient(
    task_losses: LossesFn,
    params: dict[str, torch.Tensor],
    weights: torch.Tensor,
    batch: object,
    meta_batch: object,
    lr: float,
    weight_decay: float = 0.0,
    r: float = 0.01,
) -> torch.Tensor:
    """d L_meta(w') / d lambda, with L_meta the sum of task losses on `meta_batch`, by the
    original's finite difference. `task_losses(batch, params) -> [K]`."""
    names = list(params)
    w = [params[n].detach().requires_grad_(True) for n in names]
    train = (weights.detach() * task_losses(batch, dict(zip(names, w)))).sum()
    grads = torch.autograd.grad(train, w, allow_unused=True)
    average_(list(grads))  # torchrun: the global batch's virtual step, meta gradient and differences
    virtual = [
        (p.detach() - lr * ((g if g is not None else 0) + weight_decay * p.detach())).requires_grad_(True)
        for p, g in zip(w, grads)
    ]
    meta = task_losses(meta_batch, dict(zip(names, virtual))).sum()
    d = torch.autograd.grad(meta, virtual, allow_unused=True)
    d = [g if g is not None else torch.zeros_like(p) for g, p in zip(d, virtual)]
    average_(d)
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in d]))
    step = r / (norm + 1e-30)
    with torch.no_grad():
        plus = task_losses(batch, {n: p.detach() + step * g for n, p, g in zip(names, w, d)})
        minus = task_losses(batch, {n: p.detach() - step * g for n, p, g in zip(names, w, d)})
    average_([plus, minus])
    return -lr * (plus - minus) / (2 * step)


class AutoLambda(LossWeighting):
    needs_meta_batch = True

    def __init__(self, num_tasks: int, init: float = 0.1, meta_lr: float = 1e-4, r: float = 0.01):
        super().__init__(num_tasks)
        check_number("AutoLambda", "meta_lr", meta_lr, low=0.0, low_open=True)
        check_number("AutoLambda", "r", r, low=0.0, low_open=True)
        self.init, self.meta_lr, self.r = init, meta_lr, r
        self._build(torch.full((num_tasks,), float(init)))

    def _build(self, values: torch.Tensor) -> None:
        self.task_weights = values.detach().clone().requires_grad_(True)
        self.meta_optimizer = torch.optim.Adam([self.task_weights], lr=self.meta_lr)

    def to(self, device: torch.device) -> AutoLambda:
        state = self.meta_optimizer.state_dict()
        self._build(self.task_weights.to(device))
        self.meta_optimizer.load_state_dict(state)  # moves Adam's moments with the weights
        return self

    def prepare(self, ctx: StepContext) -> None:
        if ctx.meta_batch is not None:
            group = ctx.optimizer.param_groups[0]
            params = {n: p for n, p in ctx.model.named_parameters() if p.requires_grad}
            with buffers_unchanged(ctx.model):
                hyper = autol_hypergradient(
                    ctx.task_losses, params, self.task_weights, ctx.batch, ctx.meta_batch,
                    lr=group["lr"], weight_decay=group.get("weight_decay", 0.0), r=self.r,
                )
            self.task_weights.grad = hyper.to(self.task_weights.dtype)
            self.meta_optimizer.step()

    def combine(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        self.reported["weights"] = self.task_weights.detach().clone()
        return (self.task_weights.detach() * losses).sum()

    def state_dict(self) -> dict:
        return {"weights": self.task_weights.detach().cpu(), "meta_optimizer": self.meta_optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.task_weights.copy_(state["weights"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
