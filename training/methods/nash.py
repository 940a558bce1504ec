"""Nash-MTL (Navon et al., ICML 2022): bargaining weights a > 0 with (G G^T) a = 1/a, computed
on the Gram matrix normalised by its Frobenius norm (as the original). That condition is the
stationarity of the strictly convex 1/2 a^T M a - sum log a, so a damped Newton solve (warm
started from the last weights) replaces the original's cvxpy loop. The update sum_k a_k g_k
is clipped to norm `max_norm` (1.0) before DGR is added."""

from __future__ import annotations

import torch

from repeval.errors import check_number
from repeval.training.methods.gradient import GradientMethod


def nash_weights(gram: torch.Tensor, init: torch.Tensor | None = None, max_iter: int = 100, tol: float = 1e-10) -> torch.Tensor:
    k = gram.shape[0]
    scale = gram.norm()
    if scale == 0:
        return torch.ones(k, dtype=gram.dtype)
    m = gram / scale + 1e-10 * torch.eye(k, dtype=gram.dtype)  # ridge: rank-deficient G stays solvable
    a = torch.ones(k, dtype=gram.dtype) if init is None else init.clone()

    def objective(x):
        return 0.5 * x @ m @ x - torch.log(x).sum()

    for _ in range(max_iter):
        grad = m @ a - 1 / a
        if grad.norm() < tol:
            break
        step = torch.linalg.solve(m + torch.diag(1 / a**2), -grad)
        t = 1.0
        while ((a + t * step) <= 0).any() or objective(a + t * step) > objective(a) + 1e-4 * t * grad @ step:
            t /= 2
            if t < 1e-12:
                break
        a = a + t * step
    return a


class NashMTL(GradientMethod):
    def __init__(self, num_tasks: int, max_norm: float = 1.0, update_every: int = 1):
        super().__init__(num_tasks)
        check_number("NashMTL", "max_norm", max_norm, low=0.0, low_open=True)
        check_number("NashMTL", "update_every", update_every, kind=int, low=1)
        self.max_norm, self.update_every = max_norm, update_every
        self.alpha: torch.Tensor | None = None
        self.steps = 0

    def weights(self, gram: torch.Tensor) -> torch.Tensor:
        if self.alpha is None or self.steps % self.update_every == 0:
            self.alpha = nash_weights(gram, init=self.alpha)
        self.steps += 1
        norm = torch.sqrt((self.alpha @ gram @ self.alpha).clamp_min(0))  # ||alpha^T G||
        return self.alpha * (self.max_norm / norm) if norm > self.max_norm else self.alpha

    def state_dict(self) -> dict:
        return {"alpha": self.alpha, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.alpha, self.steps = state["alpha"], state["steps"]
