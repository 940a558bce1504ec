"""Shared property checks for multi-task methods (explicit tolerances, float64)."""

from __future__ import annotations

import torch

SCALES = (0.0, 1e-10, 1.0, 1e10)


def random_grads(k: int = 3, p: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randn(k, p, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def assert_finite_under_scaling(aggregate, grads: torch.Tensor) -> None:
    for scale in SCALES:
        out = aggregate(grads * scale)
        assert out.shape == grads.shape[1:] and torch.isfinite(out).all(), f"non-finite output at scale {scale}"


def assert_same_for_same_seed(make, grads: torch.Tensor) -> None:
    a, b = make(), make()
    for _ in range(3):
        torch.testing.assert_close(a.aggregate(grads), b.aggregate(grads), rtol=0, atol=0)
