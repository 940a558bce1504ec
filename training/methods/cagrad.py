"""CAGrad (Liu et al., NeurIPS 2021): maximise the worst task improvement within a ball of
radius c||g0|| around the mean gradient g0. Dual over the simplex:
    min_w  w^T M b + c ||g0|| sqrt(w^T M w),  M = G G^T, b = 1/K,
solved by projected gradient descent with backtracking (K dimensions: no generic solver needed).
d = g0 + (c ||g0|| / ||g_w||) g_w, rescaled by 1 / (1 + c^2); sum scale: K * d.

A task whose gradient is exactly zero (no targets in the batch) is left out of the step's solve
(`GradientMethod.solve`): g0 and the ball are those of the other tasks, on their sum scale,
rather than a mean diluted by a task that cannot move."""

from __future__ import annotations

import torch

from repeval.errors import check_number
from repeval.training.methods.gradient import GradientMethod, combine_rows, gram_of_rows


def project_to_simplex(v: torch.Tensor) -> torch.Tensor:
    u, _ = torch.sort(v, descending=True)
    css = torch.cumsum(u, 0) - 1
    ind = torch.arange(1, len(v) + 1, dtype=v.dtype)
    rho = int(torch.nonzero(u - css / ind > 0).max())
    return (v - css[rho] / (rho + 1)).clamp_min(0)


def cagrad_weights(gram: torch.Tensor, c: float = 0.4, iters: int = 200) -> torch.Tensor:
    """Weights of d = g0 + (c ||g0|| / ||g_w||) g_w (before the rescale, mean scale): b + lambda w."""
    k = len(gram)
    b = torch.full((k,), 1.0 / k, dtype=gram.dtype)
    g0_norm = torch.sqrt((b @ gram @ b).clamp_min(0))
    if c == 0 or g0_norm == 0:
        return b
    radius = c * g0_norm

    def objective(w):
        return w @ gram @ b + radius * torch.sqrt((w @ gram @ w).clamp_min(1e-30))

    w, step = b.clone(), 1.0 / float(gram.diagonal().max().clamp_min(1e-30))
    for _ in range(iters):
        wr = w.clone().requires_grad_(True)
        value = objective(wr)
        (grad,) = torch.autograd.grad(value, wr)
        while True:
            candidate = project_to_simplex(w - step * grad)
            if objective(candidate) <= value - 1e-4 * grad @ (w - candidate) or step < 1e-20:
                break
            step /= 2
        if (candidate - w).abs().max() < 1e-12:
            break
        w, step = candidate, step * 2
    g_w_norm = torch.sqrt((w @ gram @ w).clamp_min(1e-60))
    return b + radius / g_w_norm * w


def cagrad_direction(grads: torch.Tensor, c: float = 0.4) -> torch.Tensor:
    """d before the 1/(1+c^2) rescale, on the mean scale."""
    return combine_rows(cagrad_weights(gram_of_rows(grads), c), grads)


class CAGrad(GradientMethod):
    def __init__(self, num_tasks: int, c: float = 0.4):
        super().__init__(num_tasks)
        check_number("CAGrad", "c", c, low=0.0)
        self.c = c

    def weights(self, gram: torch.Tensor) -> torch.Tensor:
        return len(gram) * cagrad_weights(gram, self.c) / (1 + self.c**2)
