"""The universality of an encoder (Definition 2 and Theorem 1 of arXiv 2409.16651), measured.

For a task with frozen embeddings z_i and labels y_i (classes 0..C-1), two readings of the
optimal head psi* (`optimal=`):
- "held-out" (default): psi* is the head of the family with the lowest *expected* loss. Its L2
  penalty (and, for MLP heads, its number of epochs) is chosen by k-fold cross-validation on the
  training embeddings, it is refitted on the whole training split and scored on data it never
  saw (`repeval.probes.heldout`). Random heads are scored on the same held-out data:
      gap = mean_{i in H} L(sigma(y_i), psi^Delta(z_i)) - mean_{i in H} L(y_i, psi*(z_i)),
  H = the test split when there is one; without one, the random heads' loss on the training
  split (which they never learned from) minus psi*'s cross-validated loss. The gap is finite on
  separable embeddings, and a negative gap means random heads really do as well as the best.
- "train-fit" (the definition as written): psi* is fitted to convergence on the training
  embeddings (full-batch L-BFGS, seeded restarts, lowest training loss kept, stopped on the L2
  norm of the mean-loss gradient, optional fixed `l2`), and
      gap = mean_{i in train} L(sigma(y_i), psi^Delta(z_i)) - min_psi mean_{i in train} L(y_i, psi(z_i)).
  On separable embeddings the minimum is 0 at infinite weights (flagged `separable`), and the
  gap is then the random heads' loss alone, a function of the embedding's scale.

The rest is shared:
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

Spread: `gap_std_` over random-head draws; with the held-out reading also over CV folds
(`gap_fold_std_`: the std of the folds' validation losses of psi*), combined into a normal 95 %
interval `gap_ci_` = mean +- 1.96 sqrt(s_random^2 / R + s_folds^2 / k). Across training seeds the
paired statistics of `repeval.stats` apply to the gaps unchanged.

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

import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from sklearn.base import BaseEstimator

from repeval.errors import InvalidChoiceError, check_choice, check_number
from repeval.defaults import HEAD_HIDDEN
from repeval.heads import head_logits
from repeval.probes.config import HEADS, READINGS
from repeval.probes.heldout import DEFAULT_GRIDS, fit_linear_heldout, fit_mlp_heldout, fold_masks, mlp_logits, stack_mlp_heads
from repeval.probes.matching import (  # noqa: F401 - part of this API
    best_permutation, brute_force_permutation, matched_losses, matching_cost,
)
from repeval.probes.trainfit import (  # noqa: F401 - part of this API
    SEPARABLE_LOSS, OptimalHead, fit_optimal_head, gradient_norm, init_head,
)


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
    return matched_losses(log_probs, y, n_classes, sigma)


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
    optimal : {"held-out", "train-fit"}, default="held-out"
        Reading of the optimal head (module docstring). "held-out" is finite and comparable on
        the separable embeddings real encoders produce; "train-fit" is Definition 2 as written.
    cv : int, default=5
        Folds of the held-out reading's cross-validation.
    l2_grid : tuple of float or None, default=None
        Penalties the held-out reading chooses from (on standardised features); None: the
        family's default grid (`repeval.probes.heldout.DEFAULT_GRIDS`).
    max_epochs : int, default=30
        Epoch limit of the held-out MLP fits (early stopping picks the epoch).
    restarts : int or None, default=None
        Train-fit reading: seeded L-BFGS restarts; None: 1 for "linear" (convex), 3 for "mlp".
    tol : float, default=1e-4
        Stop when the L2 norm of the optimal head's objective gradient is <= tol (L-BFGS fits).
    max_iter : int, default=1000
        L-BFGS iterations per fit.
    standardize : bool, default=False
        Standardise embeddings with training statistics before everything (random heads too).
    random_state : int, default=0
    l2 : float, default=0.0
        Train-fit reading only: a fixed L2 penalty (l2 / 2)||W||^2 on the optimal head's weight
        matrices while it is fitted (off by default, as in the paper).

    Attributes (after `fit`)
    ----------
    n_classes_, optimal_ (dict: reading, loss, loss_source, ...), separable_ (train-fit reading;
    None under held-out), random_ (list of dicts, one per random head), stored_ (same for
    `stored_heads`), gap_mean_, gap_std_, gap_fold_std_, gap_ci_, universality_mean_,
    universality_std_, universality_ (1 / gap_mean_), spearman_ (rho, p-value of proxy vs gap over
    random heads), heldout_ (HeldOutFit, held-out reading), test_ (dict, when test arrays are given).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(200, 8)); y = (z[:, 0] > 0).astype(int)
    >>> m = UniversalityMeasure(n_random=3, cv=3).fit(z, y)
    >>> m.gap_mean_ > 0, m.optimal_["loss_source"]
    (True, 'cv')
    """

    def __init__(self, n_random: int = 10, head: str = "linear", hidden: int = HEAD_HIDDEN, optimal: str = "held-out",
                 cv: int = 5, l2_grid: tuple[float, ...] | None = None, max_epochs: int = 30,
                 restarts: int | None = None, tol: float = 1e-4, max_iter: int = 1000, standardize: bool = False,
                 random_state: int = 0, l2: float = 0.0):
        self.n_random = n_random
        self.head = head
        self.hidden = hidden
        self.optimal = optimal
        self.cv = cv
        self.l2_grid = l2_grid
        self.max_epochs = max_epochs
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
        check_choice(owner, "optimal", self.optimal, READINGS)
        check_number(owner, "cv", self.cv, kind=int, low=2)
        if self.l2_grid is not None:
            if not isinstance(self.l2_grid, (tuple, list)) or not self.l2_grid:
                raise InvalidChoiceError(f"The 'l2_grid' parameter of {owner} must be a non-empty list of floats >= 0. "
                                         f"Got {self.l2_grid!r} instead.")
            for value in self.l2_grid:
                check_number(owner, "l2_grid", value, low=0.0)
        check_number(owner, "max_epochs", self.max_epochs, kind=int, low=1)
        if self.restarts is not None:
            check_number(owner, "restarts", self.restarts, kind=int, low=1)
        check_number(owner, "tol", self.tol, low=0.0, low_open=True)
        check_number(owner, "max_iter", self.max_iter, kind=int, low=1)
        check_number(owner, "l2", self.l2, low=0.0)
        if self.l2 > 0 and self.optimal == "held-out":
            raise InvalidChoiceError(f"The 'l2' parameter of {owner} fixes the train-fit reading's penalty; the held-out "
                                     f"reading chooses it from 'l2_grid'. Got l2={self.l2!r} with optimal='held-out'.")

    def fit(self, X, y, X_test=None, y_test=None, n_classes: int | None = None,
            stored_heads: list[list[torch.Tensor]] | None = None, trained_head: list[torch.Tensor] | None = None,
            groups=None):
        """Measure universality of embeddings `X` `[N, D]` for labels `y` `[N]`. `groups` `[N]`
        (e.g. the image of each pixel) keeps a group on one side of every CV split."""
        self._validate()
        X, y = np.asarray(X), np.asarray(y, dtype=np.int64)
        if X.ndim != 2 or len(X) != len(y):
            raise ValueError(f"X must be [N, D] with N = len(y) = {len(y)}; got {X.shape}")
        if self.head == "trained" and trained_head is None:
            raise ValueError("head='trained' needs the checkpoint's head: pass trained_head=[w1, b1, w2, b2]")
        self.n_classes_ = int(n_classes or y.max() + 1)
        # Random heads are scored in the embeddings' own precision: float32 features (an
        # encoder's) carry no more digits, and float32 products are twice as fast.
        self._head_dtype = torch.float32 if X.dtype == np.float32 else torch.float64
        if self.standardize:
            self.mean_, self.scale_ = X.mean(0), X.std(0) + 1e-12
        z, yt = self._tensor(X), torch.from_numpy(y)
        test = None if X_test is None else (self._tensor(np.asarray(X_test)), np.asarray(y_test, dtype=np.int64))
        family = "linear" if self.head == "linear" else "mlp"
        self.heldout_ = None
        if self.head == "trained":
            self._fit_trained(z, yt, [p.detach().to(torch.float64) for p in trained_head], test)
        elif self.optimal == "train-fit":
            self._fit_train(z, yt, family)
        else:
            self._fit_heldout(z, yt, family, test, None if groups is None else np.asarray(groups))

        heads = [init_head(family, X.shape[1], self.hidden, self.n_classes_, self.random_state + 1 + j)
                 for j in range(self.n_random)]
        self.random_heads_ = heads
        self.random_ = self._measure_heads(z, y, heads, test)
        random_test_rows = self._test_rows
        # Stored dummy heads are always MLPs (DGR's predictor architecture), whatever the family.
        self.stored_ = self._measure_heads(z, y, [[t.to(torch.float64) for t in p] for p in (stored_heads or [])], test)
        gaps = np.array([r["gap"] for r in self.random_])
        self.gap_mean_, self.gap_std_ = float(gaps.mean()), float(gaps.std())
        folds = self.optimal_.get("fold_losses") or []
        self.gap_fold_std_ = float(np.std(folds, ddof=1)) if len(folds) > 1 else 0.0
        spread = gaps.std(ddof=1) if len(gaps) > 1 else 0.0
        half = 1.96 * math.sqrt(spread ** 2 / len(gaps) + (self.gap_fold_std_ ** 2 / len(folds) if folds else 0.0))
        self.gap_ci_ = (self.gap_mean_ - half, self.gap_mean_ + half)
        universality = 1.0 / gaps
        self.universality_mean_, self.universality_std_ = float(universality.mean()), float(universality.std())
        self.universality_ = 1.0 / self.gap_mean_
        proxies = np.array([r["proxy"] for r in self.random_])
        if len(gaps) >= 3 and np.ptp(gaps) > 0 and np.ptp(proxies) > 0:
            rho, p = spearmanr(proxies, gaps)
            self.spearman_ = (float(rho), float(p))
        else:
            self.spearman_ = (math.nan, math.nan)
        self.test_ = None if test is None else self._test(*test, random_test_rows)
        return self

    # ---- the optimal head, by reading ----

    def _fit_train(self, z: torch.Tensor, yt: torch.Tensor, family: str) -> None:
        restarts = self.restarts or (1 if family == "linear" else 3)
        optimal = fit_optimal_head(z, yt, family, self.hidden, self.n_classes_, restarts, self.tol,
                                   self.max_iter, self.random_state, self.l2)
        self.optimal_head_ = optimal.params
        accuracy = self._accuracy(z, yt, optimal.params)
        # Separable: the optimum's loss is (nearly) zero, or it classifies every sample and the
        # stopping rule caught it still growing its weights (not converged).
        self.separable_ = optimal.loss < SEPARABLE_LOSS or (accuracy == 1.0 and not optimal.converged)
        self.optimal_ = {"reading": "train-fit", "loss": optimal.loss, "loss_source": "train",
                         "train_loss": optimal.loss, "grad_norm": optimal.grad_norm, "tol": self.tol,
                         "converged": optimal.converged, "n_iter": optimal.n_iter,
                         "restart_losses": optimal.restart_losses, "head": self.head, "l2": self.l2,
                         "accuracy": accuracy, "separable": self.separable_, "weight_norm": _weight_norm(optimal.params)}

    def _fit_trained(self, z, yt, params, test) -> None:
        """The checkpoint's head as psi*: scored on the test split when there is one (it never
        saw it), else on training (then the reading is train-fit's)."""
        self.optimal_head_ = params
        with torch.no_grad():
            train_loss = float(F.cross_entropy(head_logits(z, params), yt))
        source, loss = "train", train_loss
        if test is not None and self.optimal == "held-out":
            source, loss = "test", self._loss(test[0], test[1], params)
        self.separable_ = None
        self.optimal_ = {"reading": self.optimal, "loss": loss, "loss_source": source, "train_loss": train_loss,
                         "grad_norm": gradient_norm(z, yt, params, "mean"), "converged": False, "n_iter": 0,
                         "restart_losses": [train_loss], "head": "trained", "l2": None,
                         "accuracy": self._accuracy(z, yt, params), "weight_norm": _weight_norm(params)}

    def _fit_heldout(self, z, yt, family: str, test, groups) -> None:
        units = len(yt) if groups is None else len(np.unique(groups))
        if units < self.cv:
            what = "training samples" if groups is None else "groups (images)"
            raise InvalidChoiceError(f"The 'cv' parameter of UniversalityMeasure must be <= the number of {what} "
                                     f"({units}). Got {self.cv} instead.")
        grid = tuple(self.l2_grid) if self.l2_grid is not None else DEFAULT_GRIDS[family]
        masks = fold_masks(yt.numpy(), self.cv, self.random_state, groups)
        if family == "linear":
            fit = fit_linear_heldout(z, yt, self.n_classes_, grid, masks, self.tol, self.max_iter)
        else:
            fit = fit_mlp_heldout(z, yt, self.n_classes_, self.hidden, grid, masks, self.max_epochs, seed=self.random_state)
        if fit.edge:
            warnings.warn(f"universality: the held-out optimal {family} head's choice sits on the grid's edge "
                          f"({fit.edge}: l2 {fit.l2:g}{'' if fit.epochs is None else f', {fit.epochs} epochs'}); "
                          f"pass a wider l2_grid (or more max_epochs)", stacklevel=3)
        self.heldout_, self.optimal_head_ = fit, fit.params
        with torch.no_grad():
            train_loss = float(F.cross_entropy(head_logits(z, fit.params), yt))
        source, loss = "cv", fit.cv_loss
        if test is not None:
            source, loss = "test", self._loss(test[0], test[1], fit.params)
        self.separable_ = None
        self.optimal_ = {"reading": "held-out", "loss": loss, "loss_source": source, "train_loss": train_loss,
                         "cv_loss": fit.cv_loss, "fold_losses": fit.fold_losses, "head": self.head, "l2": fit.l2,
                         "epochs": fit.epochs, "edge": fit.edge, "folds": self.cv, "grid": fit.grid,
                         "accuracy": self._accuracy(z, yt, fit.params), "weight_norm": _weight_norm(fit.params),
                         "seconds": fit.seconds}

    # ---- heads on the data ----

    def _measure_heads(self, z, y: np.ndarray, heads: list[list[torch.Tensor]], test) -> list[dict]:
        """Each head's matched loss on training (its permutation chosen there), the proxy, and its
        gap on the reading's held-out data (test; or training for CV and train-fit). The heads
        share one stacked forward and one backward (their losses are independent)."""
        if not heads:
            return []
        dtype = self._head_dtype
        stacked = stack_mlp_heads(heads) if len(heads[0]) == 4 else [torch.stack(ps) for ps in zip(*heads)]
        params = [t.to(dtype).requires_grad_(True) for t in stacked]
        yt = torch.from_numpy(y)
        log_probs = F.log_softmax(_stacked_logits(z.to(dtype), params), dim=-1)  # [R, N, C]
        summed = -log_probs.gather(-1, yt.view(1, -1, 1).expand(len(heads), -1, 1)).sum()
        grads = torch.autograd.grad(summed, params)  # heads are independent: each block is its own gradient
        if len(grads) == 4:  # the stacked W1 is [D, R, H]: heads on its second axis
            grads = (grads[0].transpose(0, 1), *grads[1:])
        proxies = torch.sqrt(sum((g.double() ** 2).flatten(1).sum(1) for g in grads)).tolist()
        test_log_probs = None
        if self.optimal_["loss_source"] == "test":
            with torch.no_grad():
                test_log_probs = F.log_softmax(_stacked_logits(test[0].to(dtype), [p.detach() for p in params]), dim=-1)
                test_log_probs = test_log_probs.double().numpy()
        rows, self._test_rows = [], []
        for j, log_p in enumerate(log_probs.detach().double().numpy()):
            row = matched_losses(log_p, y, self.n_classes_)
            row["proxy"] = proxies[j]
            scored = row["matched_loss"]
            if test_log_probs is not None:
                self._test_rows.append(matched_losses(test_log_probs[j], test[1], self.n_classes_, np.array(row["permutation"])))
                scored = row["heldout_matched_loss"] = self._test_rows[-1]["matched_loss"]
            row["gap"] = scored - self.optimal_["loss"]
            row["universality"] = 1.0 / row["gap"] if row["gap"] > 0 else math.inf
            rows.append(row)
        return rows

    def _loss(self, z, y: np.ndarray, params) -> float:
        with torch.no_grad():
            return float(F.cross_entropy(head_logits(z, params), torch.from_numpy(y)))

    @staticmethod
    def _accuracy(z, yt, params) -> float:
        with torch.no_grad():
            return float((head_logits(z, params).argmax(1) == yt).double().mean())

    def _tensor(self, X: np.ndarray) -> torch.Tensor:
        if self.standardize:
            X = (X - self.mean_) / self.scale_
        return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float64))

    def _test(self, z: torch.Tensor, y: np.ndarray, rows: list[dict]) -> dict:
        """The test split's gaps (both readings): the optimal head's test loss, and the random
        heads' (scored there already under held-out) with their training permutations."""
        optimal = self.optimal_["loss"] if self.optimal_["loss_source"] == "test" else self._loss(z, y, self.optimal_head_)
        rows = rows or [evaluate_head(z, y, p, self.n_classes_, sigma=np.array(r["permutation"]))
                        for p, r in zip(self.random_heads_, self.random_)]
        gaps = np.array([r["matched_loss"] - optimal for r in rows])
        return {"optimal_loss": optimal, "random": rows, "gap_mean": float(gaps.mean()),
                "gap_std": float(gaps.std()), "universality": float(1.0 / gaps.mean()) if gaps.mean() > 0 else math.inf}


def _stacked_logits(z: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """`head_logits` of R stacked heads, `[R, N, C]`, with one matrix product for all first
    layers (R separate products of a few columns each run far below the BLAS's speed)."""
    if len(params) == 2:
        w, b = params
        r, c, d = w.shape
        return ((z @ w.reshape(r * c, d).T).view(-1, r, c) + b).transpose(0, 1)
    return mlp_logits(z, params).transpose(0, 1)


def _weight_norm(params: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((w * w).sum() for w in params[0::2])))
