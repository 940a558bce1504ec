"""Dummy Gradient norm Regularization (Shin, Do & Son, arXiv 2409.16651, eq. 5 / Algorithm 1).

For task k with frozen random dummy heads psi^Delta_kj (j = 1..d), the penalty is

    P_k = mean_j || grad_{theta^Delta_kj} L_k(psi^Delta_kj(z), y_k) ||        (penalty="norm")
    P_k = mean_j || grad_{theta^Delta_kj} L_k(psi^Delta_kj(z), y_k) ||^2      (penalty="squared")

with L_k the task kind's batch loss (cross-entropy, per-pixel cross-entropy, L1 of depth or
normals...), theta^Delta_kj all parameters of dummy head j (any head module: a two-layer MLP
or a DeepLabv3 head), and the training loss gains lambda * sum_k P_k.
"norm" is the paper's equation; "squared" is what the authors' released code penalises.

The encoder output z does not depend on the dummy parameters, so the regulariser only needs the
dummy heads: it returns g = lambda * dP/dz, and the training step pushes g through the encoder in
the same backward as the task losses (the encoder is never re-run, and batch-norm statistics are
updated once per step). Task heads never see the penalty. Two estimators of dP/dz:

- "exact": double backward through the dummy heads only (create_graph on the head gradients);
- "finite-diff": perturb each dummy head by +-eps along its own normalised gradient u (so the
  parameter step has norm eps, as in the authors' code) and take the central difference
      d||grad_theta L||/dz  ~=  [dL(theta + eps u)/dz - dL(theta - eps u)/dz] / (2 eps),
  multiplied by 2||grad_theta L|| for the squared penalty. `fd_scheme="forward"` takes the
  authors' one-sided difference [dL(theta + eps u)/dz - dL(theta)/dz] / eps instead (one forward
  of the dummy heads less, O(eps) error). The authors re-run the whole model for the perturbed
  loss; repeval re-uses z.
- `fd_scheme="authors"`: the arithmetic of the DGR scene code (`compute_hessian`), which differs
  from "forward" as soon as there are several tasks. Dummy set j is the j-th dummy head of every
  penalised task, with joint loss L_j = sum_k L_k(psi_kj(z)) and joint gradient g_j = (g_kj)_k.
  All its heads move together by eps along g_j / ||g_j|| (not each along its own gradient), and
  the squared penalty's factor 2||g_j|| is taken as 2 (L_j(theta + eps u) - L_j(theta)) / eps:
      dP/dz ~= (1/d) sum_j w_j [dL_j(theta_j + eps u_j)/dz - dL_j(theta_j)/dz] / eps,
  w_j = 2 (L_j+ - L_j) / eps (squared) or 1 (norm). Task k's share is its own terms of L_j, so
  "before" order still gets one gradient per task. Holds every task's perturbed graph at once.
  The reported penalties are the per-task P_k above, whatever the estimator.
"""

from __future__ import annotations

import torch

from repeval.models import DummyHeads
from repeval.training.config import DEFAULT_LAMBDA, ESTIMATORS, FD_SCHEMES, ORDERS, PENALTIES, DGRConfig
from repeval.distributed import average_, world_size

__all__ = ["DGRConfig", "DEFAULT_LAMBDA", "ESTIMATORS", "FD_SCHEMES", "ORDERS", "PENALTIES", "DummyGradientRegularizer",
           "dummy_losses", "dummy_gradient_penalty", "with_gradient"]

# DGRConfig and its choices live in the torch-free config module (the CLI reads them).
_TINY = 1e-30  # keeps sqrt differentiable where a dummy's gradient vanishes


def dummy_losses(heads: DummyHeads, z: torch.Tensor, y: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The task's loss under each stacked dummy head (`params`, shaped like `heads.params()`): `[d]`."""
    return heads.losses(z, y, params)


def _per_dummy_sq_norms(grads: tuple[torch.Tensor, ...]) -> torch.Tensor:
    # vector_norm reduces without a parameter-sized temporary (g**2 would make one per tensor:
    # hundreds of MB for DeepLabv3 dummies).
    return sum(torch.linalg.vector_norm(g.flatten(1), dim=1).pow(2) for g in grads)  # [d]


def dummy_gradient_penalty(heads: DummyHeads, z: torch.Tensor, y: torch.Tensor, penalty: str = "norm") -> torch.Tensor:
    """P for one task as a differentiable function of `z` (the exact estimator's objective)."""
    params = tuple(p.detach().requires_grad_(True) for p in heads.params())
    grads = torch.autograd.grad(dummy_losses(heads, z, y, params).sum(), params, create_graph=True)
    sq = _per_dummy_sq_norms(grads)
    per_dummy = sq if penalty == "squared" else _norm(sq)
    return per_dummy.mean()


def _norm(sq: torch.Tensor) -> torch.Tensor:
    """sqrt(sq), differentiable at 0 (gradient 0 there: a task without targets has a zero
    penalty and a zero gradient); exactly 0 at 0, and unchanged in float32 elsewhere."""
    return (sq + _TINY).sqrt() - _TINY**0.5


def with_gradient(z: torch.Tensor, task_z_grads: torch.Tensor) -> torch.Tensor:
    """Zero-valued [K] terms whose gradient at z is `task_z_grads[k]`: added to the task losses,
    they leave every loss value bit for bit unchanged (s - s == 0) and put DGR inside each task's
    gradient ("before" order).

    >>> z = torch.ones(2, 3, requires_grad=True)
    >>> terms = with_gradient(z, torch.full((1, 2, 3), 0.5))
    >>> terms.tolist(), torch.autograd.grad(terms.sum(), z)[0][0].tolist()
    ([0.0], [0.5, 0.5, 0.5])
    """
    s = (task_z_grads.detach() * z.unsqueeze(0)).flatten(1).sum(dim=1).float()
    return s - s.detach()


class DummyGradientRegularizer:
    """Computes lambda * dP/dz from the model's dummy heads, for the tasks in `tasks` (all by
    default; a single-task run penalises its own task only).

    `__call__(z, targets)` returns `(z_grad, penalties)`: `z_grad` shaped like `z` (add it to
    z's gradient) or, with `order="before"`, one per task `[K, *z.shape]`; `penalties` the
    detached per-task P_k, 0 for tasks not in `tasks` (a tensor; no host sync).
    """

    def __init__(self, dummy_heads: list[DummyHeads], config: DGRConfig, tasks: tuple[int, ...] | None = None,
                 per_task_z: bool = False):
        self.dummy_heads = list(dummy_heads)
        self.config = config
        self.tasks = tuple(range(len(self.dummy_heads))) if tasks is None else tuple(tasks)
        self.per_task_z = per_task_z  # z stacked per task (MTAN): task k's dummies read z[k]

    def __call__(self, z: torch.Tensor, targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        grads, penalties = self.task_gradients(z, targets)
        return (grads if self.config.order == "before" else grads.sum(dim=0)), penalties

    def task_gradients(self, z: torch.Tensor, targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """lambda * dP_k/dz for every task, `[K, *z.shape]` in z's dtype (0 for tasks not
        penalised; with per-task z, task k's sits in slot k), and the detached penalties."""
        estimate = self._exact if self.config.estimator == "exact" else self._finite_difference
        with torch.autocast(z.device.type, enabled=False):
            # bf16 activations from autocast are lifted to float32; float64 stays float64.
            z32 = z.detach().to(torch.promote_types(z.dtype, torch.float32))
            grads = z32.new_zeros((len(self.dummy_heads), *z32.shape))
            penalties = z32.new_zeros(len(self.dummy_heads))
            reads = {k: (z32[k] if self.per_task_z else z32).detach().requires_grad_(True) for k in self.tasks}
            if self.config.estimator == "finite-diff" and self.config.fd_scheme == "authors":
                estimates = self._authors_scheme(reads, targets)
            else:
                estimates = {k: estimate(reads[k], self.dummy_heads[k], targets[k]) for k in self.tasks}
            for k, (grad, penalties[k]) in estimates.items():
                if self.per_task_z:
                    grads[k, k] = grad
                else:
                    grads[k] = grad
        return (self.config.strength * grads).to(z.dtype), penalties

    def join(self, losses: torch.Tensor, z: torch.Tensor, targets: list[torch.Tensor]):
        """DGR's order, decided here and nowhere else. Returns `(losses, z_grad, penalties,
        task_grads)`: "after" leaves the task losses alone and returns the summed gradient at z,
        which the step adds once the method has combined the task gradients; "before" adds to
        each task loss a zero-valued term carrying that task's gradient (`with_gradient`), and
        returns no z_grad. `task_grads` is `task_gradients`' [K, *z] (diagnostics read it)."""
        task_grads, penalties = self.task_gradients(z, targets)
        if self.config.order == "before":
            return losses + with_gradient(z, task_grads), None, penalties, task_grads
        return losses, task_grads.sum(dim=0), penalties, task_grads

    def _exact(self, zd, heads, y):
        if world_size() > 1:
            return self._exact_global(zd, heads, y)
        penalty = dummy_gradient_penalty(heads, zd, y, self.config.penalty)
        (grad,) = torch.autograd.grad(penalty, zd)
        return grad, penalty.detach()

    def _exact_global(self, zd, heads, y):
        """torchrun: P of the dummies' gradient over the global batch, g = mean over ranks of
        each rank's g_r. This rank's share of dP/dz (times R, which the gradient averaging
        divides out) is the VJP of its own g_r with dP/dg: g / ||g|| (norm) or 2 g (squared)."""
        params = tuple(p.detach().requires_grad_(True) for p in heads.params())
        local = torch.autograd.grad(dummy_losses(heads, zd, y, params).sum(), params, create_graph=True)
        g = [t.detach().clone() for t in local]
        average_(g)
        sq = _per_dummy_sq_norms(g)
        norms = (sq + _TINY).sqrt()
        squared = self.config.penalty == "squared"
        coeff = (2 * torch.ones_like(norms) if squared else 1 / norms) / heads.count
        objective = sum((coeff.view(-1, *[1] * (a.dim() - 1)) * a * b).sum() for a, b in zip(local, g))
        (grad,) = torch.autograd.grad(objective, zd)
        return grad, (sq if squared else _norm(sq)).mean().detach()

    def _finite_difference(self, zd, heads, y):
        eps, squared = self.config.eps, self.config.penalty == "squared"
        forward = self.config.fd_scheme == "forward"
        params = tuple(p.detach().requires_grad_(True) for p in heads.params())
        # The one-sided scheme re-uses this pass's graph (through z too) for L(theta).
        base = dummy_losses(heads, zd if forward else zd.detach(), y, params)
        grads = torch.autograd.grad(base.sum(), params, retain_graph=forward)
        average_(list(grads))  # torchrun: the global batch's gradient sets the norm and the direction
        sq = _per_dummy_sq_norms(grads)
        norms = (sq + _TINY).sqrt()  # [d]
        weights = ((2 * norms if squared else torch.ones_like(norms)) / heads.count).detach()
        step = eps / norms  # along each dummy's unit gradient: one addcmul, no parameter-sized temporaries

        def moved(sign: float) -> tuple[torch.Tensor, ...]:
            return tuple(torch.addcmul(p.detach(), g, sign * step.view(-1, *[1] * (g.dim() - 1))) for p, g in zip(params, grads))

        if forward:
            diff = (dummy_losses(heads, zd, y, moved(1.0)) - base) / eps  # ~ ||grad||
            (grad,) = torch.autograd.grad((weights * diff).sum(), zd)
        else:
            # One side at a time: a side's perturbed copy of the dummies (48 M values per set
            # of DeepLabv3 heads) is freed before the other is made.
            (grad,) = torch.autograd.grad((weights * dummy_losses(heads, zd, y, moved(1.0))).sum(), zd)
            (minus,) = torch.autograd.grad((weights * dummy_losses(heads, zd, y, moved(-1.0))).sum(), zd)
            grad = (grad - minus) / (2 * eps)
        return grad, (sq if squared else _norm(sq)).mean().detach()

    def _authors_scheme(self, reads: dict[int, torch.Tensor], targets: list[torch.Tensor]) -> dict:
        """The DGR scene code's estimate (module docstring), split into each task's share."""
        eps, squared = self.config.eps, self.config.penalty == "squared"
        parts = {}
        for k, zd in reads.items():
            heads = self.dummy_heads[k]
            params = tuple(p.detach().requires_grad_(True) for p in heads.params())
            base = dummy_losses(heads, zd, targets[k], params)  # [d], through z too
            grads = torch.autograd.grad(base.sum(), params, retain_graph=True)
            average_(list(grads))
            parts[k] = (params, grads, base, _per_dummy_sq_norms(grads))
        joint = (sum(sq for *_, sq in parts.values()) + _TINY).sqrt()  # ||g_j|| over the set's heads, [d]
        step = eps / joint
        rises = {}
        for k, (params, grads, base, _) in parts.items():
            moved = tuple(torch.addcmul(p.detach(), g, step.view(-1, *[1] * (g.dim() - 1))) for p, g in zip(params, grads))
            rises[k] = (dummy_losses(self.dummy_heads[k], reads[k], targets[k], moved) - base) / eps  # [d]
        quotient = sum(r.detach() for r in rises.values())  # (L_j+ - L_j) / eps ~ ||g_j||
        average_([quotient])
        count = self.dummy_heads[next(iter(parts))].count
        weights = (2 * quotient if squared else torch.ones_like(quotient)) / count
        out = {}
        for k, (_, _, _, sq) in parts.items():
            (grad,) = torch.autograd.grad((weights * rises[k]).sum(), reads[k])
            out[k] = (grad, (sq if squared else _norm(sq)).mean().detach())
        return out
