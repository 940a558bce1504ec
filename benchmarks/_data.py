"""Synthetic embeddings at UTKFace scale, shared by the benchmarks (not part of the package)."""

from __future__ import annotations

import numpy as np

from repeval.probes.embeddings import EmbeddingSet
from repeval.tasks import TaskSpec

UTKFACE_CLASSES = (7, 2, 5)
UTKFACE_TRAIN, UTKFACE_TEST = 18_966, 4_742


def synthetic_embeddings(n_train: int, n_test: int, dim: int, classes=UTKFACE_CLASSES, seed: int = 0,
                         signal: float = 1.0) -> EmbeddingSet:
    """ReLU Gaussian-mixture features whose clusters carry every task's label, plus noise. Class
    centres have std `signal` per dimension (1.0: every task separable; ~0.05: overlapping classes,
    as real features of hard tasks)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    labels = np.stack([rng.integers(0, c, n) for c in classes], axis=1)
    centers = [rng.normal(0, signal, (c, dim)) for c in classes]
    x = sum(cs[labels[:, k]] for k, cs in enumerate(centers)) + rng.normal(0, 2.0, (n, dim))
    x = np.maximum(x, 0).astype(np.float32)
    tasks = tuple(TaskSpec(name, c, tuple(map(str, range(c)))) for name, c in zip(("age", "gender", "race"), classes))
    return EmbeddingSet.from_arrays("synthetic", x[:n_train], labels[:n_train], x[n_train:], labels[n_train:], tasks)
