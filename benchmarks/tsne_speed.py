"""openTSNE (FFT gradients, PCA init, all cores) vs scikit-learn's TSNE on the same points.

Default: 24,000 points (UTKFace scale) of 2048-d ReLU Gaussian-mixture features reduced to 50-d
by PCA first (both get the same input). Goal: openTSNE >= 3x faster.

    python benchmarks/tsne_speed.py [--n 24000] [--dim 2048]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE as SkTSNE

from repeval.probes.plots import embed_2d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=24_000)
    parser.add_argument("--dim", type=int, default=2048)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centers = rng.normal(0, 1, (12, args.dim))
    x = np.maximum(centers[rng.integers(0, 12, args.n)] + rng.normal(0, 1, (args.n, args.dim)), 0).astype(np.float32)
    x = PCA(50, random_state=0).fit_transform(x).astype(np.float32)

    started = time.perf_counter()
    embed_2d(x, "tsne", seed=0)
    t_open = time.perf_counter() - started
    started = time.perf_counter()
    SkTSNE(perplexity=30, init="pca", learning_rate="auto", random_state=0, n_jobs=os.cpu_count()).fit_transform(x)
    t_sk = time.perf_counter() - started
    print(f"{args.n} points, 50-d (PCA of {args.dim}-d), {os.cpu_count()} cores")
    print(f"  openTSNE (repeval)   {t_open:7.1f} s")
    print(f"  sklearn TSNE         {t_sk:7.1f} s")
    print(f"  speed-up: {t_sk / t_open:.2f}x (goal >= 3)")


if __name__ == "__main__":
    main()
