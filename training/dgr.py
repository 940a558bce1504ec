"""Dummy Gradient norm Regularization (Shin, Do & Son, arXiv 2409.16651, eq. 5 / Algorithm 1).

For task k with frozen random dummy heads psi^Delta_kj (j = 1..d), the penalty is

    P_k = mean_j || grad_{theta^Delta_kj} L_k(psi^Delta_kj(z), y_k) ||        (penalty="norm")
    P_k = mean_j || grad_{theta^Delta_kj} L_k(psi^Delta_kj(z), y_k) ||^2      (penalty="squared")

with L_k the batch-mean cross-entropy, and the training loss gains lambda * sum_k P_k.
"norm" is the paper's equation; "squared" is what the authors' released code penalises.

The encoder output z does not depend on the dummy parameters, so the regulariser only needs the
dummy heads: it returns g = lambda * dP/dz, and the training step pushes g through the encoder in
the same backward as the task losses (the encoder is never re-run, and batch-norm statistics are
updated once per step). Task heads never see the penalty. Two estimators of dP/dz:

- "exact": double backward through the dummy heads only (create_graph on the head gradients);
- "finite-diff": perturb each dummy head by +-eps along its own normalised gradient u (so the
  parameter step has norm eps, as in the authors' code) and take the central difference
      d||grad_theta L||/dz  ~=  [dL(theta + eps u)/dz - dL(theta - eps u)/dz] / (2 eps),
  multiplied by 2||grad_theta L|| for the squared penalty. The authors use a one-sided difference
  and re-run the whole model for the perturbed loss; repeval re-uses z.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from repeval.errors import check_choice, check_number
from repeval.models import DummyHeads

PENALTIES = ("norm", "squared")
ESTIMATORS = ("exact", "finite-diff")
# Where DGR's gradient joins a multi-task method. "after" (default, the authors' code): added to
# the encoder gradient after the method has combined the task gradients, so it is never
# projected or reweighted. "before": task k's DGR gradient is part of task k's loss, so the
# method combines it like the task (free for every method: no extra backward).
ORDERS = ("after", "before")
# Chosen with benchmarks/dgr_scale.py (README, "Choosing lambda"): the smallest lambda of the
# grid {0.01, 0.1, 0.3, 1} that cuts the end-of-run penalty by at least a third against
# lambda=0 on MultiDigits without lowering test accuracy. The paper's grid (1e-5..1e-7) belongs
# to the authors' squared finite-difference code; at 1e-6 its gradient at z is ~4e-6 of the
# task gradient on ResNet-50 (measured at initialisation), i.e. it barely changes training.
DEFAULT_LAMBDA = {"norm": 0.3, "squared": 0.1}
_TINY = 1e-30  # keeps sqrt differentiable where a dummy's gradient vanishes


@dataclass(frozen=True)
class DGRConfig:
    """Options of the regulariser; `lam=None` takes the default of the chosen penalty.

    >>> DGRConfig().strength, DGRConfig(penalty="squared").strength
    (0.3, 0.1)
    >>> DGRConfig(penalty="squared", estimator="finite-diff", eps=1e-4, dummies=1, lam=1e-6).strength
    1e-06
    """

    lam: float | None = None
    dummies: int = 3
    penalty: str = "norm"
    estimator: str = "exact"
    eps: float = 1e-3
    dummy_seed: int = 0
    order: str = "after"

    def __post_init__(self) -> None:
        check_choice("DGRConfig", "penalty", self.penalty, PENALTIES)
        check_choice("DGRConfig", "order", self.order, ORDERS)
        check_choice("DGRConfig", "estimator", self.estimator, ESTIMATORS)
        check_number("DGRConfig", "dummies", self.dummies, kind=int, low=1)
        check_number("DGRConfig", "eps", self.eps, low=0.0, low_open=True)
        if self.lam is not None:
            check_number("DGRConfig", "lam", self.lam, low=0.0)

    @property
    def strength(self) -> float:
        return DEFAULT_LAMBDA[self.penalty] if self.lam is None else float(self.lam)


def dummy_losses(z: torch.Tensor, y: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """Batch-mean cross-entropy of each stacked dummy head: `[d]`."""
    logits = DummyHeads.apply(z, params)  # [d, B, C]
    d, b, c = logits.shape
    ce = F.cross_entropy(logits.reshape(d * b, c), y.repeat(d), reduction="none")
    return ce.view(d, b).mean(dim=1)


def _per_dummy_sq_norms(grads: tuple[torch.Tensor, ...]) -> torch.Tensor:
    return sum(g.pow(2).flatten(1).sum(dim=1) for g in grads)  # [d]


def dummy_gradient_penalty(
    z: torch.Tensor, y: torch.Tensor, params: tuple[torch.Tensor, ...], penalty: str = "norm"
) -> torch.Tensor:
    """P for one task as a differentiable function of `z` (the exact estimator's objective)."""
    params = tuple(p.detach().requires_grad_(True) for p in params)
    grads = torch.autograd.grad(dummy_losses(z, y, params).sum(), params, create_graph=True)
    sq = _per_dummy_sq_norms(grads)
    per_dummy = sq if penalty == "squared" else (sq + _TINY).sqrt()
    return per_dummy.mean()


def with_gradient(z: torch.Tensor, task_z_grads: torch.Tensor) -> torch.Tensor:
    """Zero-valued [K] terms whose gradient at z is `task_z_grads[k]`: added to the task losses,
    they leave every loss value bit for bit unchanged (s - s == 0) and put DGR inside each task's
    gradient ("before" order)."""
    s = (task_z_grads.detach() * z.unsqueeze(0)).flatten(1).sum(dim=1).float()
    return s - s.detach()


class DummyGradientRegularizer:
    """Computes lambda * dP/dz from the model's dummy heads, for the tasks in `tasks` (all by
    default; a single-task run penalises its own task only).

    `__call__(z, targets)` returns `(z_grad, penalties)`: `z_grad` shaped like `z` (add it to
    z's gradient) or, with `order="before"`, one per task `[K, *z.shape]`; `penalties` the
    detached per-task P_k, 0 for tasks not in `tasks` (a tensor; no host sync).
    """

    def __init__(self, dummy_heads: list[DummyHeads], config: DGRConfig, tasks: tuple[int, ...] | None = None):
        self.dummy_heads = list(dummy_heads)
        self.config = config
        self.tasks = tuple(range(len(self.dummy_heads))) if tasks is None else tuple(tasks)

    def __call__(self, z: torch.Tensor, targets: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        estimate = self._exact if self.config.estimator == "exact" else self._finite_difference
        with torch.autocast(z.device.type, enabled=False):
            # bf16 activations from autocast are lifted to float32; float64 stays float64.
            zd = z.detach().to(torch.promote_types(z.dtype, torch.float32)).requires_grad_(True)
            grads = zd.new_zeros((len(self.dummy_heads), *zd.shape))
            penalties = zd.new_zeros(len(self.dummy_heads))
            for k in self.tasks:
                grads[k], penalties[k] = estimate(zd, self.dummy_heads[k], targets[k])
        grad = grads if self.config.order == "before" else grads.sum(dim=0)
        return (self.config.strength * grad).to(z.dtype), penalties

    def _exact(self, zd, heads, y):
        penalty = dummy_gradient_penalty(zd, y, heads.params(), self.config.penalty)
        (grad,) = torch.autograd.grad(penalty, zd)
        return grad, penalty.detach()

    def _finite_difference(self, zd, heads, y):
        eps, squared = self.config.eps, self.config.penalty == "squared"
        params = tuple(p.detach().requires_grad_(True) for p in heads.params())
        grads = torch.autograd.grad(dummy_losses(zd.detach(), y, params).sum(), params)
        norms = (_per_dummy_sq_norms(grads) + _TINY).sqrt()  # [d]
        units = [g / norms.view(-1, *[1] * (g.dim() - 1)) for g in grads]
        plus = tuple(p.detach() + eps * u for p, u in zip(params, units))
        minus = tuple(p.detach() - eps * u for p, u in zip(params, units))
        diff = (dummy_losses(zd, y, plus) - dummy_losses(zd, y, minus)) / (2 * eps)  # ~ ||grad||
        weights = (2 * norms if squared else torch.ones_like(norms)) / heads.count
        (grad,) = torch.autograd.grad((weights.detach() * diff).sum(), zd)
        return grad, (norms.pow(2) if squared else norms).mean().detach()
