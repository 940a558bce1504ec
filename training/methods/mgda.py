"""MGDA (Sener & Koltun, NeurIPS 2018): the min-norm point of the convex hull of the task
gradients. Solved exactly for K <= 10 by checking every support set S: the minimiser of
w^T M w with sum w = 1 on S solves the KKT system [[2 M_S, 1], [1^T, 0]] (least squares, so
singular faces such as opposite gradients work); the optimum is the best feasible one.
Frank-Wolfe with exact line search beyond. Update on the sum scale: K * d.

A task whose gradient is exactly zero (no targets in the batch) is left out of the step's solve
(`GradientMethod.solve`): with it, the hull holds 0, the min-norm point is 0 and the step would
train nothing, although that task's loss cannot change. The original does not define the case."""

from __future__ import annotations

import itertools

import torch

from repeval.training.methods.gradient import GradientMethod


def min_norm_weights(gram: torch.Tensor, max_iter: int = 2000) -> torch.Tensor:
    """w on the simplex minimising w^T gram w."""
    k = gram.shape[0]
    # w does not change when the Gram is scaled; the KKT systems below mix its entries with 1s,
    # and at gradient norms of 1e-4 (entries ~1e-8) that costs ~1e-8 of accuracy unscaled.
    gram = gram / gram.diagonal().max().clamp_min(1e-300)
    if k <= 10:
        best, best_value = None, None
        for size in range(1, k + 1):
            for support in itertools.combinations(range(k), size):
                idx = list(support)
                kkt = torch.zeros(size + 1, size + 1, dtype=gram.dtype)
                kkt[:size, :size] = 2 * gram[idx][:, idx]
                kkt[:size, size] = kkt[size, :size] = 1
                rhs = torch.zeros(size + 1, dtype=gram.dtype)
                rhs[size] = 1
                v = torch.linalg.lstsq(kkt, rhs[:, None]).solution[:size, 0]
                if abs(float(v.sum()) - 1) > 1e-9:
                    continue
                w = torch.zeros(k, dtype=gram.dtype)
                w[idx] = v
                if (w < -1e-12).any():
                    continue
                w = w.clamp_min(0) / w.clamp_min(0).sum()
                value = w @ gram @ w
                if best_value is None or value < best_value - 1e-15:
                    best, best_value = w, value
        if best is not None:
            return best
    w = torch.full((k,), 1.0 / k, dtype=gram.dtype)
    for _ in range(max_iter):
        mw = gram @ w
        t = int(torch.argmin(mw))
        vv, vt, tt = w @ mw, mw[t], gram[t, t]
        if vv - vt <= 1e-12 * max(float(vv), 1e-30):
            break
        denom = vv - 2 * vt + tt
        gamma = float(((vv - vt) / denom).clamp(0, 1)) if denom > 0 else 1.0
        w = (1 - gamma) * w
        w[t] += gamma
    return w


class MGDA(GradientMethod):
    supports_rep_grad = True  # MGDA-UB: the min-norm point of the gradients at z

    def weights(self, gram: torch.Tensor) -> torch.Tensor:
        return len(gram) * min_norm_weights(gram)
