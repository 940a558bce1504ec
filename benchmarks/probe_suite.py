"""The probe suite at UTKFace scale: 18,966 x 2048 train, 4,742 x 2048 test, 3 tasks (7/2/5).

For each probe: fit and predict seconds through repeval (`run_probes`, jobs=1) and through the
bare scikit-learn estimator on the same arrays, and the ratio (goal <= 1.1x); probes under a
minute run `--reps` interleaved rounds and keep each side's best. For `svm`, repeval
uses the shared precomputed RBF Gram (goal: all three tasks <= 60 s); the bare `SVC()` pipeline
takes minutes per task, so by default it runs on the first task only and is multiplied by 3
(`--full-bare-svm` runs all three).

    python benchmarks/probe_suite.py [--probes dt,svm,knn,logreg,linsvm,knn-cosine] [--scale 1.0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from _data import UTKFACE_CLASSES as CLASSES
from _data import UTKFACE_TEST, UTKFACE_TRAIN, synthetic_embeddings

from repeval.probes.embeddings import EmbeddingSet
from repeval.probes.registry import PROBES
from repeval.probes.suite import ProbeConfig, run_probes


def bare(name: str, data: EmbeddingSet, tasks: range) -> tuple[float, float]:
    fit = predict = 0.0
    for k in tasks:
        est = make_pipeline(StandardScaler(), SVC()) if name == "svm" else PROBES.get(name).make(0)
        started = time.perf_counter()
        est.fit(data.train.features, data.train.labels[:, k])
        fitted = time.perf_counter()
        est.predict(data.test.features)
        fit, predict = fit + fitted - started, predict + time.perf_counter() - fitted
    return fit, predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probes", default="dt,svm,knn,logreg,linsvm,knn-cosine")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the UTKFace sample counts")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--full-bare-svm", action="store_true")
    parser.add_argument("--reps", type=int, default=3, help="interleaved rounds for probes under a minute")
    args = parser.parse_args()
    data = synthetic_embeddings(int(UTKFACE_TRAIN * args.scale), int(UTKFACE_TEST * args.scale), args.dim)
    print(f"train {data.train.features.shape}, test {data.test.features.shape}, tasks {CLASSES}")
    print(f"{'probe':11s} {'repeval s':>10s} {'bare s':>10s} {'ratio':>7s}   mean accuracy")
    for name in args.probes.split(","):
        tasks = range(len(CLASSES)) if (name != "svm" or args.full_bare_svm) else range(1)
        best_ours, best_bare = None, None
        for _ in range(args.reps):  # interleaved; the best of each side is kept
            started = time.perf_counter()
            rows = run_probes([data], ProbeConfig(classifiers=(name,), jobs=1))
            ours = time.perf_counter() - started
            if best_ours is None or ours < best_ours[0]:
                best_ours = (ours, rows)
            b_fit, b_pred = bare(name, data, tasks)
            if best_bare is None or b_fit + b_pred < sum(best_bare):
                best_bare = (b_fit, b_pred)
            if ours > 60:  # slow probes: one round tells enough
                break
        (ours, rows), (b_fit, b_pred) = best_ours, best_bare
        fit_s = sum(r["fit_seconds"] for r in rows)
        pred_s = sum(r["predict_seconds"] for r in rows)
        factor = len(CLASSES) / len(tasks)
        note = "" if factor == 1 else f"  (bare: first task x{factor:.0f})"
        acc = np.mean([r["accuracy"] for r in rows])
        print(f"{name:11s} {ours:10.1f} {(b_fit + b_pred) * factor:10.1f} {ours / ((b_fit + b_pred) * factor):7.3f}"
              f"   {acc:.4f}   [repeval fit {fit_s:.1f} s + predict {pred_s:.1f} s; "
              f"bare fit {b_fit * factor:.1f} s + predict {b_pred * factor:.1f} s]{note}")


if __name__ == "__main__":
    main()
