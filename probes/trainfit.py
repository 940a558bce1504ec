"""Heads of the universality measure: random draws (PyTorch's default initialisation, like DGR's
dummy heads), Theorem 1's gradient-norm proxy, and the train-fit reading's optimal head
(Definition 2 as written: fitted to convergence on the training embeddings)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from repeval.heads import head_logits, head_params, mlp_head


def init_head(family: str, dim: int, hidden: int, n_classes: int, seed: int, dtype=torch.float64) -> list[torch.Tensor]:
    """Parameters of a randomly initialised head (PyTorch defaults, like DGR's dummy heads).

    >>> [tuple(p.shape) for p in init_head("mlp", 8, 4, 3, seed=0)]
    [(4, 8), (4,), (3, 4), (3,)]
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module = mlp_head(dim, hidden, n_classes) if family != "linear" else torch.nn.Linear(dim, n_classes)
    return [p.to(dtype).clone() for p in head_params(module)]


def gradient_norm(z: torch.Tensor, y: torch.Tensor, params: list[torch.Tensor], reduction: str = "sum") -> float:
    """|| grad_theta L(y, psi_theta(z)) ||_F, with L summed (Theorem 1) or averaged over samples."""
    params = [p.detach().requires_grad_(True) for p in params]
    loss = F.cross_entropy(head_logits(z, params), y, reduction=reduction)
    grads = torch.autograd.grad(loss, params)
    return float(torch.sqrt(sum((g * g).sum() for g in grads)))


@dataclass
class OptimalHead:
    params: list[torch.Tensor]
    loss: float
    grad_norm: float
    converged: bool
    n_iter: int
    restart_losses: list[float]


def _penalised(z: torch.Tensor, y: torch.Tensor, params: list[torch.Tensor], l2: float) -> torch.Tensor:
    """Mean cross-entropy + (l2 / 2) * squared norm of the weight matrices (biases are free)."""
    loss = F.cross_entropy(head_logits(z, params), y)
    if l2 > 0:
        loss = loss + 0.5 * l2 * sum((w * w).sum() for w in params[0::2])
    return loss


def fit_optimal_head(z: torch.Tensor, y: torch.Tensor, family: str, hidden: int, n_classes: int,
                     restarts: int = 3, tol: float = 1e-4, max_iter: int = 1000, seed: int = 0,
                     l2: float = 0.0) -> OptimalHead:
    """Full-batch L-BFGS (strong Wolfe), several seeded restarts; the lowest training loss wins.
    With `l2` > 0 the fitted objective adds (l2 / 2)||W||^2 on the weight matrices (the reported
    loss stays the plain cross-entropy): on separable embeddings the unpenalised optimum lies at
    infinity. Each restart stops when the L2 norm of the objective's gradient is <= `tol` (converged), when
    L-BFGS stops making progress (it stalls at ReLU kinks of MLP heads: not converged, and the
    gradient norm reached is reported), or after `max_iter` iterations.

    >>> z = torch.randn(50, 4, dtype=torch.float64); y = (z[:, 0] > 0).long()
    >>> fit_optimal_head(z, y, "linear", 0, 2, restarts=1, tol=1e-3).grad_norm <= 1e-3
    True
    """
    best = None
    losses = []
    for r in range(restarts):
        params = [p.requires_grad_(True) for p in init_head(family, z.shape[1], hidden, n_classes, seed + 7919 * r, z.dtype)]
        opt = torch.optim.LBFGS(params, lr=1, max_iter=20, history_size=20, line_search_fn="strong_wolfe",
                                tolerance_grad=0.0, tolerance_change=0.0)

        def closure(opt=opt, params=params):  # bound now: one closure per restart
            opt.zero_grad()
            loss = _penalised(z, y, params, l2)
            loss.backward()
            return loss

        n_iter, grad, previous = 0, math.inf, math.inf
        while n_iter < max_iter:
            loss = float(opt.step(closure).detach())
            n_iter += 20
            grad = _objective_grad_norm(z, y, params, l2)
            # L-BFGS stalls at ReLU kinks (its line search stops moving): report, don't spin.
            if grad <= tol or not math.isfinite(grad) or loss >= previous:
                break
            previous = loss
        with torch.no_grad():
            loss = float(F.cross_entropy(head_logits(z, params), y))
        losses.append(loss)
        if best is None or loss < best.loss:
            best = OptimalHead([p.detach() for p in params], loss, grad, grad <= tol, n_iter, [])
    best.restart_losses = losses
    return best


def _objective_grad_norm(z, y, params, l2: float) -> float:
    params = [p.detach().requires_grad_(True) for p in params]
    grads = torch.autograd.grad(_penalised(z, y, params, l2), params)
    return float(torch.sqrt(sum((g * g).sum() for g in grads)))


# Below this mean training loss the optimal head all but separates the classes: the measured gap
# is then close to the random heads' own loss, a function of the embedding's scale.
SEPARABLE_LOSS = 1e-2
