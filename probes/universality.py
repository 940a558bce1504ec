"""The universality of an encoder (Definition 2 and Theorem 1 of arXiv 2409.16651), measured.

For a task with frozen embeddings z_i and labels y_i (classes 0..C-1):
- optimal head psi*: fitted to convergence on the training embeddings (full-batch L-BFGS, seeded
  restarts, lowest training loss kept, stopped on the L2 norm of the mean-loss gradient);
- random heads psi^Delta: the same architecture with PyTorch's default initialisation (as DGR's
  dummy heads), `n_random` seeded draws;
- class-permutation matching: the paper writes the min over sigma inside the sum over samples,
  but sigma is one permutation of the task's classes (a per-sample sigma would make every head
  perfect). The matched cross-entropy sum_c sum_{i: y_i = c} -log p(sigma(c) | z_i) is a linear
  assignment on the C x C matrix M[c, c'] = sum_{i: y_i=c} -log p(c' | z_i), solved exactly by the
  Hungarian algorithm;
- gap = mean_i L(sigma(y_i), psi^Delta(z_i)) - mean_i L(y_i, psi*(z_i)) and U = 1 / gap. Means,
  not the paper's sums, so datasets of different size compare;
- Theorem 1's proxy || grad_theta^Delta sum_i L(y_i, psi^Delta(z_i)) ||_F (true labels, summed
  as in eq. 4) for every random head, and its Spearman correlation with the gap across heads.

On a test split the permutation found on the training split is applied (no re-matching), and
the optimal head is the one fitted on training.

Head families (`head=`):
- "linear" (default): multinomial logistic regression as psi* and random linear heads. This is
  the convex setting Theorem 1 assumes, so it is where a user checks the theorem's claim; psi*
  is the unique global optimum, so the measure does not depend on the optimiser; and it fits
  the 60-s budget at UTKFace scale on a 2-core CPU (one restart suffices).
- "mlp": the task predictor's architecture, Linear(D, hidden)-ReLU-Linear(hidden, C), for both
  psi* and the random heads. Definition 2 compares heads of the predictor's own architecture,
  and DGR's dummies are such heads. Its optimum is local (non-convex), so it takes restarts
  (3 by default), and each L-BFGS evaluation costs ~4 N D hidden FLOPs: minutes on a CPU at
  UTKFace scale.
- "trained": the checkpoint's own trained head stands in for psi* (random heads are MLPs).

A checkpoint's stored DGR dummy heads (MLPs) are measured against the same psi* and reported
separately from the random draws.

`standardize=True` standardises the embeddings with training statistics first. Random-head
losses grow with the embedding scale (logits scale with ||z||), so the raw measure mixes
"how informative" with "how large"; the default follows the definition as written (no scaling).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from scipy.stats import spearmanr
from sklearn.base import BaseEstimator

from repeval.errors import check_choice, check_number
from repeval.defaults import HEAD_HIDDEN
from repeval.heads import head_logits, head_params, mlp_head  # noqa: F401 - head_logits is part of this API
from repeval.probes.config import HEADS



# ---- permutation matching ----------------------------------------------------------------------


def matching_cost(log_probs: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """M[c, c'] = sum over samples of class c of -log p(c' | z): the cost of relabelling c as c'.

    >>> import numpy as np
    >>> matching_cost(np.log([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 1]), 2).round(3)
    array([[0.105, 2.303],
           [1.609, 0.223]])
    """
    onehot = np.zeros((len(y), n_classes))
    onehot[np.arange(len(y)), y] = 1.0
    return onehot.T @ (-log_probs)


def best_permutation(cost: np.ndarray) -> np.ndarray:
    """sigma minimising sum_c cost[c, sigma(c)] (Hungarian algorithm, exact).

    >>> import numpy as np
    >>> best_permutation(np.array([[5.0, 1.0], [1.0, 5.0]]))
    array([1, 0])
    """
    rows, cols = linear_sum_assignment(cost)
    sigma = np.empty(len(rows), dtype=np.int64)
    sigma[rows] = cols
    return sigma


def brute_force_permutation(cost: np.ndarray) -> np.ndarray:
    """The same by trying all C! permutations: a reference for tests, never the product path."""
    n = cost.shape[0]
    best = min(itertools.permutations(range(n)), key=lambda p: cost[np.arange(n), list(p)].sum())
    return np.array(best, dtype=np.int64)


# ---- heads ----------------------------------------------------------------------------------


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


# ---- the measure ------------------------------------------------------------------------------


def evaluate_head(z: torch.Tensor, y: np.ndarray, params: list[torch.Tensor], n_classes: int,
                  sigma: np.ndarray | None = None) -> dict:
    """Unmatched and matched mean cross-entropy of a head, its permutation and matched accuracy.
    With `sigma` given (from the training split), it is applied instead of re-matched.

    >>> import numpy as np
    >>> z = torch.eye(2, dtype=torch.float64); swap = [torch.tensor([[0.0, 9.0], [9.0, 0.0]], dtype=torch.float64),
    ...                                                torch.zeros(2, dtype=torch.float64)]
    >>> evaluate_head(z, np.array([0, 1]), swap, 2)["permutation"]
    [1, 0]
    """
    with torch.no_grad():
        log_probs = F.log_softmax(head_logits(z, params), dim=1).cpu().numpy()
    n = len(y)
    cost = matching_cost(log_probs, y, n_classes)
    if sigma is None:
        sigma = best_permutation(cost)
    return {
        "unmatched_loss": float(np.trace(cost) / n),
        "matched_loss": float(cost[np.arange(n_classes), sigma].sum() / n),
        "matched_accuracy": float((log_probs.argmax(1) == sigma[y]).mean()),
        "permutation": sigma.tolist(),
    }


class UniversalityMeasure(BaseEstimator):
    """Universality U = 1 / (matched random-head loss - optimal-head loss) of embeddings.

    Parameters
    ----------
    n_random : int, default=10
        Random heads drawn (seeds `random_state`, `random_state + 1`, ...).
    head : {"linear", "mlp", "trained"}, default="linear"
        Head family (see the module docstring). "trained" needs `trained_head` in `fit`.
    hidden : int, default=64
        Hidden width of MLP heads (the authors' task heads used 64).
    restarts : int or None, default=None
        Seeded L-BFGS restarts for the optimal head; None: 1 for "linear" (convex), 3 for "mlp".
    tol : float, default=1e-4
        Stop when the L2 norm of the optimal head's mean-loss gradient is <= tol.
    max_iter : int, default=1000
        L-BFGS iterations per restart.
    standardize : bool, default=False
        Standardise embeddings with training statistics before everything.
    random_state : int, default=0
    l2 : float, default=0.0
        L2 penalty (l2 / 2)||W||^2 on the optimal head's weight matrices while it is fitted (off by
        default, as in the paper). For separable embeddings, where the unpenalised optimum has
        zero loss at infinite weights; recorded in `optimal_`.

    Attributes (after `fit`)
    ----------
    n_classes_, optimal_ (dict: loss, accuracy, weight_norm, separable, ...), separable_, random_ (list of dicts, one per random head), stored_ (same
    for `stored_heads`), gap_mean_, gap_std_, universality_mean_, universality_std_,
    universality_ (1 / gap_mean_), spearman_ (rho, p-value of proxy vs gap over random heads),
    test_ (dict, when test arrays are given).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(200, 8)); y = (z[:, 0] > 0).astype(int)
    >>> m = UniversalityMeasure(n_random=3, restarts=1).fit(z, y)
    >>> m.gap_mean_ > 0
    True
    """

    def __init__(self, n_random: int = 10, head: str = "linear", hidden: int = HEAD_HIDDEN, restarts: int | None = None, tol: float = 1e-4,
                 max_iter: int = 1000, standardize: bool = False, random_state: int = 0, l2: float = 0.0):
        self.n_random = n_random
        self.head = head
        self.hidden = hidden
        self.restarts = restarts
        self.tol = tol
        self.max_iter = max_iter
        self.standardize = standardize
        self.random_state = random_state
        self.l2 = l2

    def _validate(self) -> None:
        owner = "UniversalityMeasure"
        check_number(owner, "n_random", self.n_random, kind=int, low=1)
        check_choice(owner, "head", self.head, HEADS)
        check_number(owner, "hidden", self.hidden, kind=int, low=1)
        if self.restarts is not None:
            check_number(owner, "restarts", self.restarts, kind=int, low=1)
        check_number(owner, "tol", self.tol, low=0.0, low_open=True)
        check_number(owner, "max_iter", self.max_iter, kind=int, low=1)
        check_number(owner, "l2", self.l2, low=0.0)

    def fit(self, X, y, X_test=None, y_test=None, n_classes: int | None = None,
            stored_heads: list[list[torch.Tensor]] | None = None, trained_head: list[torch.Tensor] | None = None):
        """Measure universality of embeddings `X` `[N, D]` for labels `y` `[N]`."""
        self._validate()
        X, y = np.asarray(X), np.asarray(y, dtype=np.int64)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be [N, D] with N = len(y) = {len(y)}; got {X.shape}")
        if self.head == "trained" and trained_head is None:
            raise ValueError("head='trained' needs the checkpoint's head: pass trained_head=[w1, b1, w2, b2]")
        self.n_classes_ = int(n_classes or y.max() + 1)
        if self.standardize:
            self.mean_, self.scale_ = X.mean(0), X.std(0) + 1e-12
        z, yt = self._tensor(X), torch.from_numpy(y)
        family = "linear" if self.head == "linear" else "mlp"

        if self.head == "trained":
            params = [p.detach().to(torch.float64) for p in trained_head]
            with torch.no_grad():
                loss = float(F.cross_entropy(head_logits(z, params), yt))
            optimal = OptimalHead(params, loss, gradient_norm(z, yt, params, "mean"), False, 0, [loss])
        else:
            restarts = self.restarts or (1 if family == "linear" else 3)
            optimal = fit_optimal_head(z, yt, family, self.hidden, self.n_classes_, restarts, self.tol,
                                       self.max_iter, self.random_state, self.l2)
        self.optimal_head_ = optimal.params
        with torch.no_grad():
            accuracy = float((head_logits(z, optimal.params).argmax(1) == yt).double().mean())
        # Separable: the optimum's loss is (nearly) zero, or it classifies every sample and the
        # stopping rule caught it still growing its weights (not converged).
        self.separable_ = optimal.loss < SEPARABLE_LOSS or (accuracy == 1.0 and not optimal.converged)
        self.optimal_ = {"loss": optimal.loss, "grad_norm": optimal.grad_norm, "tol": self.tol,
                         "converged": optimal.converged, "n_iter": optimal.n_iter,
                         "restart_losses": optimal.restart_losses, "head": self.head, "l2": self.l2,
                         "accuracy": accuracy, "separable": self.separable_,
                         "weight_norm": float(torch.sqrt(sum((w * w).sum() for w in optimal.params[0::2])))}

        def measure(params):
            row = evaluate_head(z, y, params, self.n_classes_)
            row["gap"] = row["matched_loss"] - optimal.loss
            row["universality"] = 1.0 / row["gap"] if row["gap"] > 0 else math.inf
            row["proxy"] = gradient_norm(z, yt, params, reduction="sum")
            return row

        heads = [init_head(family, X.shape[1], self.hidden, self.n_classes_, self.random_state + 1 + j)
                 for j in range(self.n_random)]
        self.random_heads_ = heads
        self.random_ = [measure(p) for p in heads]
        # Stored dummy heads are always MLPs (DGR's predictor architecture), whatever the family.
        self.stored_ = [measure([t.to(torch.float64) for t in p]) for p in (stored_heads or [])]
        gaps = np.array([r["gap"] for r in self.random_])
        self.gap_mean_, self.gap_std_ = float(gaps.mean()), float(gaps.std())
        universality = 1.0 / gaps
        self.universality_mean_, self.universality_std_ = float(universality.mean()), float(universality.std())
        self.universality_ = 1.0 / self.gap_mean_
        proxies = np.array([r["proxy"] for r in self.random_])
        if len(gaps) >= 3 and np.ptp(gaps) > 0 and np.ptp(proxies) > 0:
            rho, p = spearmanr(proxies, gaps)
            self.spearman_ = (float(rho), float(p))
        else:
            self.spearman_ = (math.nan, math.nan)
        self.test_ = None if X_test is None else self._test(np.asarray(X_test), np.asarray(y_test, dtype=np.int64))
        return self

    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        if self.standardize:
            X = (X - self.mean_) / self.scale_
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64))

    def _test(self, X: np.ndarray, y: np.ndarray) -> dict:
        z = self._tensor(X)
        with torch.no_grad():
            optimal = float(F.cross_entropy(head_logits(z, self.optimal_head_), torch.from_numpy(y)))
        rows = [evaluate_head(z, y, p, self.n_classes_, sigma=np.array(r["permutation"]))
                for p, r in zip(self.random_heads_, self.random_)]
        gaps = np.array([r["matched_loss"] - optimal for r in rows])
        return {"optimal_loss": optimal, "random": rows, "gap_mean": float(gaps.mean()),
                "gap_std": float(gaps.std()), "universality": float(1.0 / gaps.mean()) if gaps.mean() > 0 else math.inf}
