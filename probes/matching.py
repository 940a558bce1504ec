"""Class-permutation matching of a head's outputs to a task's classes (universality's sigma): the
exact linear assignment on the permuted cross-entropy, its brute-force reference, and the matched
losses of a head."""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linear_sum_assignment


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


def matched_losses(log_probs: np.ndarray, y: np.ndarray, n_classes: int, sigma: np.ndarray | None = None) -> dict:
    """`evaluate_head` from a head's log-probabilities `[N, C]`."""
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
