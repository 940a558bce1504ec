"""Gradient methods: combine the K per-task gradients of the shared parameters into one update.

Per step: the K task gradients at z come from the heads alone; each is pushed through the
encoder once (K vector-Jacobian products of the same z, no forward re-run). Every method here
combines them linearly, with weights that depend on them only through their K x K Gram matrix,
so a method implements `weights(gram)` (float64, K numbers, on the *sum* scale, the convention
of every method in repeval).

The one shared path (`task_gradients`, `gram_matrix`, `combine_`) keeps each task's gradient as
the per-parameter tensors autograd returns: no flattening, no K x P matrix, no clone. The Gram
is accumulated in float64 from dot products of chunks of each parameter (a float32 product over
all P terms loses about 1e-3 of a squared norm on ResNet-50), and the update is formed in place, with
`torch._foreach_*`, in the first task's tensors, which then become `.grad`. Beyond the K VJPs'
own outputs, no P-length memory is touched or allocated. The update replaces the encoder's
gradient; each head gets its own task's gradient. DGR's gradient at z is pushed through the
encoder *after* the combination (as in the authors' code) and accumulates into `.grad` in
place: it is not projected or reweighted.

A task whose gradient is exactly zero (no valid target in the batch, so a loss of 0) is left
out of the step's solve (`GradientMethod.solve`): its weight is 0 and the method runs on the
other tasks' Gram matrix, on their sum scale. Every solver here would otherwise meet a zero row:
MGDA's min-norm point would be 0 (a step that trains nothing), IMTL would divide by a zero norm,
Nash-MTL's barrier would send that task's weight to infinity. With every task present, nothing
changes.

With `rep_grad=True` (methods with `supports_rep_grad`: MGDA-UB and IMTL, whose papers do
this) the task gradients are taken at the shared representation z instead: the weights come
from the Gram matrix of the K z-gradients, and one encoder backward of the combined
z-gradient (DGR's added) gives the update, at the cost of one `ew` step.
"""

from __future__ import annotations

from itertools import chain

import torch

from repeval.distributed import average_, average_gradients, sum_, world_size
from repeval.training.methods.base import Method, ParamGroups, presence


TaskGradients = list[list[torch.Tensor]]  # [task][parameter], autograd's own tensors


def task_gradients(z: torch.Tensor, z_task_grads: list[torch.Tensor], shared: list[torch.Tensor],
                   keep_graph: bool = False) -> TaskGradients:
    """Each task's gradient of the shared parameters: one VJP of z per task, as the
    per-parameter tensors autograd returns (a parameter z does not depend on gets zeros).
    The graph is freed after the last VJP unless `keep_graph`."""
    out = []
    for k, g_z in enumerate(z_task_grads):
        retain = keep_graph or k < len(z_task_grads) - 1
        grads = torch.autograd.grad(z, shared, grad_outputs=g_z, retain_graph=retain, allow_unused=True)
        out.append([g if g is not None else torch.zeros_like(p) for g, p in zip(grads, shared)])
    return out


# Elements per float32 dot product. BLAS accumulates a dot in float32 lanes: over one 2.4 M
# element tensor a squared norm is off by ~1e-5 relative, over 64 Ki elements by ~5e-8, at
# the same speed (measured); the partial dots are summed in float64.
DOT_CHUNK = 1 << 16


def gram_matrix(task_grads: TaskGradients) -> torch.Tensor:
    """G G^T [K, K] in float64, from dot products of 64 Ki-element chunks of each parameter's
    gradients, summed in float64. Reads each pair of gradients once; allocates nothing P-long."""
    k = len(task_grads)
    gram = torch.empty(k, k, dtype=torch.float64, device=task_grads[0][0].device)
    for i in range(k):
        for j in range(i, k):
            dots = [torch.dot(u, v) for a, b in zip(task_grads[i], task_grads[j])
                    for u, v in zip(a.reshape(-1).split(DOT_CHUNK), b.reshape(-1).split(DOT_CHUNK))]
            gram[i, j] = gram[j, i] = torch.stack(dots).double().sum()
    return gram


def combine_(weights: torch.Tensor, task_grads: TaskGradients) -> list[torch.Tensor]:
    """sum_k w_k g_k, formed in place in task 0's tensors (which are returned, and consumed)."""
    w = weights.tolist()  # K numbers; the solvers that made them already ran on the host
    out = task_grads[0]
    torch._foreach_mul_(out, w[0])
    for k in range(1, len(task_grads)):
        torch._foreach_add_(out, task_grads[k], alpha=w[k])
    return out


def combine_rows(weights: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    """The shared path on a [K, P] matrix (tests, reference functions): sum_k w_k grads[k]."""
    rows = [[row.clone()] for row in grads]
    return combine_(weights, rows)[0]


def gram_of_rows(grads: torch.Tensor) -> torch.Tensor:
    return gram_matrix([[row] for row in grads])


class GradientMethod(Method):
    def __init__(self, num_tasks: int, rep_grad: bool = False):
        super().__init__(num_tasks)
        self.rep_grad = bool(rep_grad)

    def weights(self, gram: torch.Tensor) -> torch.Tensor:
        """Gram matrix [K, K] (float64, on the host) of the task gradients -> combination weights [K]."""
        raise NotImplementedError

    def weights_among(self, gram: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        """`weights` of the Gram matrix of the tasks `tasks` (indices into all K); methods with
        per-task state (Nash-MTL's warm start) override it to use that state's entries."""
        return self.weights(gram)

    def solve(self, gram: torch.Tensor) -> torch.Tensor:
        """The step's weights [K] (float64, host): tasks whose gradient is exactly zero get 0
        and are left out of the solve (see the module's docstring)."""
        gram = gram.cpu()  # K x K: the solvers are small host-side loops
        active = gram.diagonal() > 0
        if bool(active.all()):
            weights = self.weights_among(gram, torch.arange(len(gram)))
        else:
            weights = torch.zeros(len(gram), dtype=gram.dtype)
            tasks = active.nonzero().flatten()
            if len(tasks):
                weights[tasks] = self.weights_among(gram[tasks][:, tasks], tasks)
        self.reported["weights"] = weights
        return weights

    def head_weights(self) -> torch.Tensor | None:
        """Factors for each task head's gradient after the step's solve (None: heads keep their
        own task's unweighted gradient, repeval's default)."""
        return None

    def aggregate(self, grads: torch.Tensor) -> torch.Tensor:
        """Rows = task gradients [K, P] -> update [P] on the sum scale (the step's path, on a matrix)."""
        return combine_rows(self.solve(gram_of_rows(grads)), grads)

    def task_losses(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Losses whose gradients are combined (IMTL-L rescales them first)."""
        return losses

    def backward(self, losses: torch.Tensor, z: torch.Tensor, z_grad: torch.Tensor | None, params: ParamGroups,
                 present: torch.Tensor | None = None) -> None:
        losses = self.task_losses(losses, presence(losses, present))
        own = [p for head in params.heads for p in head] + params.common
        torch.autograd.backward(losses.sum(), inputs=own + self.parameters(), retain_graph=True)
        z_task_grads = [torch.autograd.grad(losses[k], z, retain_graph=True)[0] for k in range(len(losses))]
        if self.rep_grad:
            self.representation_backward(z, z_task_grads, z_grad, params)
        else:
            task_grads = task_gradients(z, z_task_grads, params.shared, keep_graph=z_grad is not None)
            average_(g for grads in task_grads for g in grads)  # the global batch's, before combining
            update = combine_(self.solve(gram_matrix(task_grads)), task_grads)
            for p, g in zip(params.shared, update):
                p.grad = g if g.dtype == p.dtype else g.to(p.dtype)
            if z_grad is not None:
                torch.autograd.backward(z, z_grad)  # accumulates into .grad in place
        scale = self.head_weights()
        if scale is not None:
            for factor, head in zip(scale.tolist(), params.heads):
                for p in head:
                    if p.grad is not None:
                        p.grad.mul_(factor)
        # Identical combined updates stay as they are; heads, DGR's part and the rest are averaged.
        average_gradients(chain(params.all(), self.parameters()))

    def representation_backward(self, z: torch.Tensor, z_task_grads: list[torch.Tensor], z_grad: torch.Tensor | None,
                                params: ParamGroups) -> None:
        """Weights from the Gram matrix of the task gradients at z; one backward of the combined
        gradient. With per-task z (MTAN) each task's gradient is taken at its own z[k] (as
        LibMTL's rep_grad does for MTAN), and the combination reaches the shared parameters only:
        the task-own ones already have their gradients."""
        if not params.per_task_z:
            stacked = torch.stack(z_task_grads)
            flat = stacked.flatten(1).float()
            w = self.solve(_global_gram(flat)).to(stacked.device, stacked.dtype)
            combined = torch.tensordot(w, stacked, dims=1)
            torch.autograd.backward(z, combined if z_grad is None else combined + z_grad)
            return
        stacked = torch.stack([g[k] for k, g in enumerate(z_task_grads)])  # [K, B, ...]: task k at z[k]
        flat = stacked.flatten(1).float()
        w = self.solve(_global_gram(flat)).to(stacked.device, stacked.dtype)
        combined = stacked * w.view(-1, *[1] * (stacked.dim() - 1))  # z's shape: slice k is w_k g_k
        torch.autograd.backward(z, combined, inputs=params.shared, retain_graph=z_grad is not None)
        if z_grad is not None:
            torch.autograd.backward(z, z_grad)


def _global_gram(flat: torch.Tensor) -> torch.Tensor:
    """The Gram matrix [K, K] (float64) of representation gradients `flat` [K, N] over the global
    batch: samples are disjoint across ranks, so the ranks' Grams add up (each rank's losses are
    means over its share: 1 / R^2)."""
    gram = (flat @ flat.T).double()
    if world_size() > 1:
        gram = sum_(gram) / world_size() ** 2
    return gram
