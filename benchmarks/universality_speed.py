"""The universality measure at UTKFace scale: 18,966 x 2048 training embeddings (4,742 test),
tasks with 7/2/5 classes, 10 random heads each. Goal: the whole measure under 60 s (2-core CPU).

    python benchmarks/universality_speed.py [--head linear] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import time

from _data import UTKFACE_TEST, UTKFACE_TRAIN, synthetic_embeddings

from repeval.probes.universality_report import UniversalityConfig, measure_universality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head", default="linear")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--dim", type=int, default=2048)
    args = parser.parse_args()
    data = synthetic_embeddings(int(UTKFACE_TRAIN * args.scale), int(UTKFACE_TEST * args.scale), args.dim)
    started = time.perf_counter()
    rows = measure_universality([data], UniversalityConfig(n_random=10, head=args.head))
    total = time.perf_counter() - started
    print(f"train {data.train.features.shape}, test {data.test.features.shape}, head={args.head}, 10 random heads")
    for r in rows:
        print(f"  {r['task']:7s} optimal loss {r['optimal_loss']:.4f} (grad {r['optimal_grad_norm']:.1e}, "
              f"{r['optimal']['n_iter']} it, converged {r['optimal_converged']})  gap {r['gap_mean']:.4f} ± "
              f"{r['gap_std']:.4f}  rho(proxy, gap) {r['spearman_rho']:+.2f}")
    print(f"  whole measure: {total:.1f} s (goal < 60 s)")


if __name__ == "__main__":
    main()
