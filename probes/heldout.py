"""The optimal head of a family chosen on held-out data: the default reading of universality.

A head fitted to convergence on the training embeddings is the paper's optimum as written, but on
separable embeddings (any 2,048-d feature on a few thousand samples) its training loss is 0 at
unbounded weights and its loss elsewhere explodes. The standard fix of representation evaluation
(linear-probe protocols) is used here: the optimal head is the one with the lowest *expected*
loss, with its regularisation chosen by k-fold cross-validation on the training embeddings.

Objective of every fit: mean cross-entropy + (l2 / 2) * ||W||^2 over the weight matrices (biases
are free), for l2 on a grid. Folds are stratified by class (`StratifiedKFold`) or, with `groups`
(pixels of one image), grouped so a group never sits on both sides (`StratifiedGroupKFold`).

- Linear heads: one L-BFGS run per grid point over all folds at once (the folds' objectives are
  independent, so their sum is minimised by the tuple of their minimisers), walking the grid from
  the strongest penalty to the weakest, each point warm-started from the last. The walk stops once
  the cross-validated loss has risen `patience` points past its best (the weak end, where the fits
  are slowest, is rarely needed). Points not reached are recorded as such.
- MLP heads: Adam on minibatches, every (fold, grid point) model trained at once (stacked weights,
  one matrix product for the first layer of all models); the validation loss of every model after
  each epoch gives early stopping. An epoch is one pass over the rows, or MIN_ROUND_STEPS steps
  when a pass is shorter (small splits). The chosen (l2, epochs) minimises the cross-validated
  loss; training stops once no grid point has improved for `patience` epochs.

The chosen head is refitted on the whole training split (linear: to convergence; MLP:
the chosen number of epochs, from a fresh seeded initialisation), in float32 like the CV fits.

Every fit sees the embeddings standardised with the training split's mean and std, so the penalty
is on the weights of standardised features (as linear-probe protocols do) and the optimisers meet
a well-conditioned problem (raw ReLU features have a large common mean). That is a choice of
regulariser, not of head family: the refitted head is mapped back to the embeddings as given
(W / s, b - W (mu / s)), and every loss reported is that of a head of the family on them. The
mean and std are label-free statistics of the whole training split, shared by the folds.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from repeval.probes.trainfit import init_head

# Penalties on standardised features (mean cross-entropy + l2/2 ||W||^2), in decades from strong to
# weak. l2 = 1 is already heavy (scikit-learn's C = 1 / (l2 n) ~ 1e-4 at n = 10^4); only label-free
# features pick it, and the edge flag says so. The walk stops soon after the loss minimum, so the
# weak end costs only data that needs it (separable classes).
LINEAR_L2_GRID = (1e0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5)
# Early stopping regularises MLP heads too, so four decades suffice (UTKFace-like features pick
# 1e-2 to 1e-3, separable ones the weak end).
MLP_L2_GRID = (1e-1, 1e-2, 1e-3, 1e-4)
# An improvement of the cross-validated loss smaller than this (nats) does not count: the walk and
# early stopping end after `patience` points or epochs without one. Gaps are read to ~0.01 nats.
MIN_DELTA = 1e-3
# A choice on the grid's edge is flagged when the last step into it still gained this much: a
# further decade (or more epochs) might then move the optimum's loss by as much.
EDGE_GAIN = 1e-2
# A point this far (nats) above the best is past the minimum (the CV curve of an L2 path is
# unimodal in practice): the walk stops there.
CLEARLY_WORSE = 2e-2
# The CV fits only rank grid points: at a gradient norm g = 1e-3 the loss is within g^2 / 2mu of
# its optimum, mu >= the penalty (<= 5e-3 for penalties >= 1e-4) and in practice the data term's
# curvature, far larger, at the weak end of the grid.
CV_TOL = 1e-3
DEFAULT_GRIDS = {"linear": LINEAR_L2_GRID, "mlp": MLP_L2_GRID}


@dataclass
class HeldOutFit:
    """The chosen head, refitted on the whole training split, and how it was chosen."""

    params: list[torch.Tensor]
    l2: float
    epochs: int | None  # MLP heads: the chosen number of training epochs
    cv_loss: float  # pooled out-of-fold loss at the chosen point
    fold_losses: list[float]  # each fold's validation loss at the chosen point
    grid: list[dict] = field(default_factory=list)  # per grid point: l2, cv_loss, fold_losses, evaluated, ...
    edge: str | None = None  # "strongest" / "weakest" penalty or "epochs" when the choice sits on an edge
    seconds: float = 0.0


def fold_masks(y: np.ndarray, k: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """`[k, N]` booleans, True where a sample trains fold f's model (False: it validates it).

    >>> m = fold_masks(np.array([0, 1] * 10), 5, seed=0)
    >>> m.shape, (~m).sum(0).tolist() == [1] * 20
    ((5, 20), True)
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    n = len(y)
    # Classes rarer than k would break stratification: stratify by the common classes only.
    counts = np.bincount(y)
    strata = np.where(counts[y] >= k, y, -1)
    if groups is None:
        splits = StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), strata)
    else:
        splits = StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), strata, groups)
    masks = np.ones((k, n), dtype=bool)
    for f, (_, val) in enumerate(splits):
        masks[f, val] = False
    return masks


def _standardiser(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return z.mean(0), z.std(0).clamp_min(1e-12)


def _unstandardise(w: torch.Tensor, b: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor):
    """A first layer `x_std -> w x_std + b` as a layer on the raw embeddings (`w` is `[out, D]`)."""
    w_raw = w / scale
    return w_raw, b - w_raw @ mean


def _row_losses(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`[N, M]` cross-entropy of M stacked heads' logits `[N, M, C]`."""
    return -F.log_softmax(logits, dim=-1).gather(-1, y.view(-1, 1, 1).expand(-1, logits.shape[1], 1)).squeeze(-1)


class _DataTimesWeights(torch.autograd.Function):
    """z @ w for fixed data z `[N, D]`. Its weight gradient is computed as (g^T z)^T: for the few
    output columns of linear heads, BLAS runs z^T g (autograd's form) up to 5x slower."""

    @staticmethod
    def forward(ctx, z, w):
        ctx.save_for_backward(z)
        return z @ w

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        narrow = grad.shape[1] <= 128
        return None, (grad.T @ z).T if narrow else z.T @ grad


def _linear_logits(z: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    m, d, c = w.shape  # one matrix product for all M heads
    return _DataTimesWeights.apply(z, w.permute(1, 0, 2).reshape(d, m * c)).view(-1, m, c) + b


def _fold_losses(rows: torch.Tensor, masks: torch.Tensor) -> tuple[float, list[float]]:
    """Pooled out-of-fold mean and each fold's validation mean of `[N, k]` per-row losses."""
    val = (~masks).T.to(rows.dtype)
    per_fold = (rows * val).sum(0) / val.sum(0)
    return float((rows * val).sum() / val.sum()), per_fold.tolist()


def _lbfgs(params: list[torch.Tensor], objective, tol: float, max_iter: int) -> int:
    """Full-batch L-BFGS (strong Wolfe) until the objective's gradient norm is <= tol, progress
    stalls, or `max_iter` iterations; returns the iterations run."""
    opt = torch.optim.LBFGS(params, lr=1, max_iter=20, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=0.0, tolerance_change=0.0)

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    n_iter, previous = 0, math.inf
    while n_iter < max_iter:
        loss = float(opt.step(closure).detach())
        n_iter += 20
        grad = math.sqrt(sum(float((p.grad * p.grad).sum()) for p in params))
        if grad <= tol or not math.isfinite(loss) or loss >= previous:
            break
        previous = loss
    return n_iter


def _mark_edge(grid: list[dict], best: int) -> str | None:
    """"strongest" when the strongest penalty won (the grid may not reach the optimum); "weakest"
    when the weakest won and the CV loss was still falling there: by more than EDGE_GAIN, or
    faster than one step before (or, with two points only, by more than MIN_DELTA). A decelerating
    descent that gained less than EDGE_GAIN in its last step (separable classes: the loss tends to
    0 as the penalty does) leaves at most about that much to gain."""
    if len(grid) == 1:
        return "strongest, weakest"
    if best == 0:
        return "strongest"
    if best != len(grid) - 1:
        return None
    gains = -np.diff([g["cv_loss"] for g in grid])
    if gains[-1] > EDGE_GAIN or (gains[-1] > MIN_DELTA and (len(gains) == 1 or gains[-1] > gains[-2])):
        return "weakest"
    return None


def fit_linear_heldout(z: torch.Tensor, y: torch.Tensor, n_classes: int, grid: tuple[float, ...], masks: np.ndarray,
                       tol: float = 1e-4, max_iter: int = 1000, patience: int = 2) -> HeldOutFit:
    """Cross-validated L2 for a linear softmax head, then the refit (see the module docstring)."""
    started = time.perf_counter()
    grid = tuple(sorted(grid, reverse=True))
    mean, scale = _standardiser(z)
    z = (z - mean) / scale
    zf, k = z.float(), masks.shape[0]
    train = torch.from_numpy(masks.T).float()  # [N, k]
    counts = train.sum(0)
    w = torch.zeros(k, z.shape[1], n_classes, requires_grad=True)
    b = torch.zeros(k, n_classes, requires_grad=True)
    rows_grid, best, since_best, best_weights, previous = [], None, 0, None, None
    for i, l2 in enumerate(grid):
        solved = (w.detach().clone(), b.detach().clone())
        if previous is not None:  # a secant step along the path (in log l2): the next solution's first guess
            with torch.no_grad():
                w += w - previous[0]
                b += b - previous[1]
        previous = solved if i > 0 else None
        def objective(l2=l2):
            rows = _row_losses(_linear_logits(zf, w, b), y)
            # Each fold's own mean: the sum over folds is minimised by every fold's minimiser.
            return ((rows * train).sum(0) / counts).sum() + 0.5 * l2 * (w * w).sum()

        n_iter = _lbfgs([w, b], objective, max(tol, CV_TOL) * math.sqrt(k), max_iter)
        with torch.no_grad():
            cv, folds = _fold_losses(_row_losses(_linear_logits(zf, w, b), y).double(), torch.from_numpy(masks))
        rows_grid.append({"l2": l2, "cv_loss": cv, "fold_losses": folds, "n_iter": n_iter, "evaluated": True})
        if best is None or cv < rows_grid[best]["cv_loss"]:
            improved = best is None or cv < rows_grid[best]["cv_loss"] - MIN_DELTA
            best, best_weights = i, (w.detach().mean(0), b.detach().mean(0))
            since_best = 0 if improved else since_best + 1
        else:
            since_best += 1
        if since_best >= patience or cv > rows_grid[best]["cv_loss"] + CLEARLY_WORSE:
            rows_grid += [{"l2": g, "cv_loss": None, "fold_losses": None, "evaluated": False} for g in grid[i + 1:]]
            break
    chosen = rows_grid[best]
    w_std, b_std = _refit_linear(z, y, n_classes, chosen["l2"], *best_weights, tol, max_iter)
    params = list(_unstandardise(w_std, b_std, mean, scale))
    return HeldOutFit(params, chosen["l2"], None, chosen["cv_loss"], chosen["fold_losses"], rows_grid,
                      _mark_edge(rows_grid, best), time.perf_counter() - started)


def _refit_linear(z, y, n_classes, l2, w0, b0, tol, max_iter) -> list[torch.Tensor]:
    """L-BFGS on the whole training split, started at the mean of the folds' solutions for the
    chosen penalty; float32 like the CV fits (at a gradient norm of `tol` the loss is within
    ~tol^2 / l2 of the optimum), returned in the embeddings' dtype."""
    zf = z.float()
    w = w0.T.contiguous().requires_grad_(True)  # [C, D], nn.Linear's layout
    b = b0.clone().requires_grad_(True)

    def objective():
        return F.cross_entropy(_DataTimesWeights.apply(zf, w.T) + b, y) + 0.5 * l2 * (w * w).sum()

    _lbfgs([w, b], objective, tol, max_iter)
    return [w.detach().to(z.dtype), b.detach().to(z.dtype)]


def _mlp_init(n_models: int, dim: int, hidden: int, n_classes: int, seed: int) -> list[torch.Tensor]:
    """Stacked PyTorch-default initialisations, one seeded draw per model."""
    heads = [init_head("mlp", dim, hidden, n_classes, seed + j, torch.float32) for j in range(n_models)]
    return stack_mlp_heads(heads)


def stack_mlp_heads(heads: list[list[torch.Tensor]]) -> list[torch.Tensor]:
    """Two-layer heads (nn.Linear layouts) stacked for `mlp_logits`: W1 `[D, M, H]` (so that
    `z @ W1.view(D, M * H)` is one product, in the layout this BLAS runs fastest), b1 `[M, H]`,
    W2 `[M, C, H]`, b2 `[M, C]`."""
    return [torch.stack([h[0].T for h in heads], dim=1).contiguous(), *(torch.stack([h[i] for h in heads]) for i in (1, 2, 3))]


def mlp_logits(z: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """`[B, M, C]` logits of M stacked two-layer heads (`stack_mlp_heads`)."""
    w1, b1, w2, b2 = params
    d, m, h = w1.shape
    hidden = torch.relu((z @ w1.reshape(d, m * h)).view(-1, m, h) + b1)
    return torch.einsum("bmh,mch->bmc", hidden, w2) + b2


# Early stopping looks at the validation loss after every round of max(one pass, MIN_ROUND_STEPS)
# minibatch steps, so small training splits still take enough steps between looks.
MIN_ROUND_STEPS = 50


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Endless minibatch indices: shuffled passes over n rows."""
    while True:
        yield from torch.randperm(n, generator=generator).split(batch_size)


def _train_mlps(z: torch.Tensor, y: torch.Tensor, params: list[torch.Tensor], l2: torch.Tensor, train: torch.Tensor,
                rounds: int, batch_size: int, lr: float, seed: int, on_round=None) -> int:
    """Adam on minibatches for M stacked MLP heads; model m learns from rows with train[:, m] > 0.
    `on_round(r)` may return True to stop. Returns the steps per round."""
    opt = torch.optim.Adam(params, lr=lr, foreach=True)
    n = len(y)
    steps = max(math.ceil(n / batch_size), MIN_ROUND_STEPS)
    batches = _batches(n, batch_size, torch.Generator().manual_seed(seed))
    for r in range(1, rounds + 1):
        for _ in range(steps):
            idx = next(batches)
            weight = train[idx]
            rows = _row_losses(mlp_logits(z[idx], params), y[idx])
            # Per model: mean over its rows in the batch; L2 on both weight matrices.
            data = ((rows * weight).sum(0) / weight.sum(0).clamp_min(1.0)).sum()
            penalty = 0.5 * (l2 * ((params[0] ** 2).sum((0, 2)) + (params[2] ** 2).sum((1, 2)))).sum()
            opt.zero_grad(set_to_none=True)
            (data + penalty).backward()
            opt.step()
        if on_round is not None and on_round(r):
            break
    return steps


def fit_mlp_heldout(z: torch.Tensor, y: torch.Tensor, n_classes: int, hidden: int, grid: tuple[float, ...],
                    masks: np.ndarray, max_epochs: int = 30, patience: int = 1, batch_size: int = 256,
                    lr: float = 3e-3, seed: int = 0) -> HeldOutFit:
    """Cross-validated L2 and early stopping for a two-layer MLP head, then the refit."""
    started = time.perf_counter()
    grid = tuple(sorted(grid, reverse=True))
    mean, scale = _standardiser(z)
    zf, k, n_grid = ((z - mean) / scale).float(), masks.shape[0], len(grid)
    # Model index m = g * k + f: grid point g, fold f.
    train = torch.from_numpy(np.tile(masks.T, (1, n_grid))).float()
    l2 = torch.tensor(grid, dtype=torch.float32).repeat_interleave(k)
    params = [p.requires_grad_(True) for p in _mlp_init(n_grid * k, z.shape[1], hidden, n_classes, seed)]
    history: list[list[tuple[float, list[float]]]] = []  # [epoch][grid point] -> (cv, folds)

    val_rows = [torch.from_numpy(np.flatnonzero(~masks[f])) for f in range(k)]

    best_seen = [math.inf, 0]  # best CV loss over all grid points, and the epoch it last improved by MIN_DELTA

    def validate(epoch: int) -> bool:
        # Fold f's models on fold f's validation rows only: 1/k of a full pass.
        totals = torch.zeros(n_grid, k, dtype=torch.float64)
        with torch.no_grad():
            for f, rows in enumerate(val_rows):
                models = [g * k + f for g in range(n_grid)]
                for chunk in rows.split(8192):
                    logits = mlp_logits(zf[chunk], [params[0][:, models], *(p[models] for p in params[1:])])
                    totals[:, f] += _row_losses(logits, y[chunk]).double().sum(0)
        sizes = torch.tensor([len(r) for r in val_rows], dtype=torch.float64)
        history.append([(float(totals[g].sum() / sizes.sum()), (totals[g] / sizes).tolist()) for g in range(n_grid)])
        current = min(c for c, _ in history[-1])
        if current < best_seen[0] - MIN_DELTA:
            best_seen[1] = epoch
        best_seen[0] = min(best_seen[0], current)
        return epoch - best_seen[1] >= patience

    steps = _train_mlps(zf, y, params, l2, train, max_epochs, batch_size, lr, seed, validate)
    cv = np.array([[c for c, _ in row] for row in history])  # [epochs, grid]
    epoch, g = np.unravel_index(int(np.argmin(cv)), cv.shape)
    rows_grid = [{"l2": grid[j], "cv_loss": float(cv[:, j].min()), "epochs": int(cv[:, j].argmin()) + 1,
                  "fold_losses": history[int(cv[:, j].argmin())][j][1], "cv_loss_per_epoch": cv[:, j].tolist(),
                  "evaluated": True} for j in range(n_grid)]
    edge = _mark_edge(rows_grid, int(g))
    if len(history) == max_epochs and max_epochs - best_seen[1] < patience:  # stopped by the limit, still improving
        edge = "epochs" if edge is None else f"{edge}, epochs"
    refit = [p.requires_grad_(True) for p in _mlp_init(1, z.shape[1], hidden, n_classes, seed + 104729)]
    # The same number of steps as the chosen CV model took (on (k-1)/k of these rows).
    _train_mlps(zf, y, refit, torch.tensor([grid[g]]), torch.ones(len(y), 1), int(epoch) + 1, batch_size, lr, seed + 1)
    w1, b1, w2, b2 = (p.detach().to(z.dtype) for p in refit)
    params64 = [*_unstandardise(w1[:, 0].T, b1[0], mean, scale), w2[0], b2[0]]
    return HeldOutFit(params64, grid[g], int(epoch) + 1, float(cv[epoch, g]), history[epoch][g][1], rows_grid, edge,
                      time.perf_counter() - started)
