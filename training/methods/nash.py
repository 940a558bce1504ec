"""Nash-MTL (Navon et al., ICML 2022): bargaining weights a > 0 with (G G^T) a = 1/a, the raw
condition the original solves. The original hands cvxpy the Gram matrix normalised by its
Frobenius norm s and carries s back into its constraint; repeval solves (M / s) b = 1/b, a
well-scaled problem at any gradient size, and returns a = b / sqrt(s), which satisfies
M a = 1/a exactly. The condition is the stationarity of the strictly convex
1/2 b^T (M / s) b - sum log b, so a damped Newton solve (warm started from the last weights)
replaces the original's cvxpy loop. The update sum_k a_k g_k then has squared norm
a^T M a = sum_k a_k (M a)_k = K, and is clipped to norm `max_norm` (1.0) as the original clips
the shared parameters' gradient: its norm is min(sqrt(K), max_norm) at any gradient scale.
DGR is added after the clip.

One divergence is left as an option: the original backpropagates sum_k a_k L_k, so each task
head's gradient is scaled by a_k (unclipped). repeval's heads get their own task's unweighted
gradient by default, as in every other gradient method; `scale_heads=True` does what the
original does (MTAN's attention modules count as task heads here; parameters shared outside the
encoder keep the unweighted sum).

A task whose gradient is exactly zero (no targets in the batch) is left out of the step's
solve (`GradientMethod.solve`): its barrier term would send its weight to infinity. Its weight
keeps its last value as the warm start of later steps."""

from __future__ import annotations

import torch

from repeval.errors import check_number
from repeval.training.methods.gradient import GradientMethod

RIDGE = 1e-10  # relative to the normalised Gram: rank-deficient G stays solvable


def nash_weights(gram: torch.Tensor, init: torch.Tensor | None = None, max_iter: int = 100, tol: float = 1e-10) -> torch.Tensor:
    """a > 0 with gram @ a = 1 / a (to `tol` on the normalised problem, the ridge aside).
    `init`: a warm start on the same (raw) scale; non-finite or non-positive entries start at 1
    on the normalised scale."""
    k = gram.shape[0]
    scale = gram.norm()
    if scale == 0:
        return torch.ones(k, dtype=gram.dtype)
    root = scale.sqrt()
    m = gram / scale + RIDGE * torch.eye(k, dtype=gram.dtype)
    b = torch.ones(k, dtype=gram.dtype)
    if init is not None:
        start = init.to(gram.dtype) * root
        b = torch.where(torch.isfinite(start) & (start > 0), start, b)

    def objective(x):
        return 0.5 * x @ m @ x - torch.log(x).sum()

    for _ in range(max_iter):
        grad = m @ b - 1 / b
        if grad.norm() < tol:
            break
        step = torch.linalg.solve(m + torch.diag(1 / b**2), -grad)
        t = 1.0
        while ((b + t * step) <= 0).any() or objective(b + t * step) > objective(b) + 1e-4 * t * grad @ step:
            t /= 2
            if t < 1e-12:
                break
        b = b + t * step
    return b / root


class NashMTL(GradientMethod):
    def __init__(self, num_tasks: int, max_norm: float = 1.0, update_every: int = 1, scale_heads: bool = False):
        super().__init__(num_tasks)
        check_number("NashMTL", "max_norm", max_norm, low=0.0, low_open=True)
        check_number("NashMTL", "update_every", update_every, kind=int, low=1)
        self.max_norm, self.update_every, self.scale_heads = max_norm, update_every, bool(scale_heads)
        self.alpha: torch.Tensor | None = None  # [K], raw scale; NaN for a task never solved yet
        self.steps = 0
        self._head_alpha: torch.Tensor | None = None

    def weights(self, gram: torch.Tensor) -> torch.Tensor:
        return self.weights_among(gram, torch.arange(len(gram)))

    def weights_among(self, gram: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        known = self.alpha is not None and bool(torch.isfinite(self.alpha[tasks]).all())
        if not known or self.steps % self.update_every == 0:
            alpha = torch.full((self.num_tasks,), float("nan"), dtype=gram.dtype) if self.alpha is None else self.alpha.clone()
            alpha[tasks] = nash_weights(gram, init=None if self.alpha is None else self.alpha[tasks])
            self.alpha = alpha
        self.steps += 1
        self.reported["alpha"] = self.alpha  # the bargaining solution; "weights" is the clipped step's
        a = self.alpha[tasks].to(gram.dtype)
        heads = torch.zeros(self.num_tasks, dtype=gram.dtype)
        heads[tasks] = a
        self._head_alpha = heads
        norm = torch.sqrt((a @ gram @ a).clamp_min(0))  # ||a^T G||, sqrt(K) up to the solve's tolerance
        return a * (self.max_norm / norm) if norm > self.max_norm else a

    def head_weights(self) -> torch.Tensor | None:
        return self._head_alpha if self.scale_heads else None

    def state_dict(self) -> dict:
        return {"alpha": self.alpha, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.alpha, self.steps = state["alpha"], state["steps"]
