"""Gradient methods: combine the K per-task gradients of the shared parameters into one update.

Per step: the K task gradients at z come from the heads alone; each is pushed through the
encoder once (K vector-Jacobian products of the same z, no forward re-run), giving the rows of
G [K, P]. Every method here combines the rows linearly, with weights that depend on G only
through its K x K Gram matrix, so a method implements `weights(G G^T)` (float64, K numbers, on
the *sum* scale, the convention of every method in repeval) and the update w^T G is formed
once in the gradients' own dtype: no P-length work beyond one Gram product and one combination.
The update replaces the encoder's gradient. Each head gets its own task's
gradient. DGR's gradient at z is pushed through the encoder *after* the combination (as in
the authors' code): it is not projected or reweighted.

With `rep_grad=True` (methods with `supports_rep_grad`: MGDA-UB and IMTL, whose papers do
this) the task gradients are taken at the shared representation z instead: the weights come
from the Gram matrix of the K z-gradients, and one encoder backward of the combined
z-gradient (DGR's added) gives the update, at the cost of one `ew` step.
"""

from __future__ import annotations

import torch

from repeval.training.methods.base import Method, ParamGroups


class GradientMethod(Method):
    def __init__(self, num_tasks: int, rep_grad: bool = False):
        super().__init__(num_tasks)
        self.rep_grad = bool(rep_grad)

    def weights(self, gram: torch.Tensor) -> torch.Tensor:
        """Gram matrix [K, K] (float64) of the task gradients -> combination weights [K]."""
        raise NotImplementedError

    def aggregate(self, grads: torch.Tensor) -> torch.Tensor:
        """Rows = task gradients [K, P] -> update [P] on the sum scale."""
        gram = (grads @ grads.T).double()
        return self.weights(gram).to(grads.dtype) @ grads

    def task_losses(self, losses: torch.Tensor) -> torch.Tensor:
        """Losses whose gradients are combined (IMTL-L rescales them first)."""
        return losses

    def backward(self, losses: torch.Tensor, z: torch.Tensor, z_grad: torch.Tensor | None, params: ParamGroups) -> None:
        losses = self.task_losses(losses)
        head_params = [p for head in params.heads for p in head]
        torch.autograd.backward(losses.sum(), inputs=head_params + self.parameters(), retain_graph=True)
        z_task_grads = [torch.autograd.grad(losses[k], z, retain_graph=True)[0] for k in range(len(losses))]
        if self.rep_grad:
            stacked = torch.stack(z_task_grads)
            flat = stacked.flatten(1).float()
            w = self.weights((flat @ flat.T).double()).to(stacked.dtype)
            combined = torch.tensordot(w, stacked, dims=1)
            torch.autograd.backward(z, combined if z_grad is None else combined + z_grad)
            return
        rows = []
        for g_z in z_task_grads:
            grads = torch.autograd.grad(z, params.shared, grad_outputs=g_z, retain_graph=True, allow_unused=True)
            rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                   for g, p in zip(grads, params.shared)]))
        update = self.aggregate(torch.stack(rows))
        offset = 0
        for p in params.shared:
            p.grad = update[offset : offset + p.numel()].view_as(p).to(p.dtype).clone()
            offset += p.numel()
        if z_grad is not None:
            torch.autograd.backward(z, z_grad)
