"""The universality measure at UTKFace scale: 18,966 x 2,048 training embeddings (4,742 test),
tasks with 7/2/5 classes, 10 random heads each, the held-out reading with 5 folds, linear and
MLP heads. Goal: both families, all three tasks, under 60 s on this 2-core CPU.

The synthetic embeddings have overlapping classes (`--signal 0.05`): with separable ones (1.0)
every penalty looks alike and the grid walk never stops early, which is not what real features of
hard tasks do. Prints the time of each part (held-out fit, random heads and scoring) per task.

    python benchmarks/universality_speed.py [--heads linear,mlp] [--scale 1.0] [--optimal held-out]
"""

from __future__ import annotations

import argparse
import time
import warnings

from _data import UTKFACE_TEST, UTKFACE_TRAIN, synthetic_embeddings

from repeval.probes.universality_report import UniversalityConfig, measure_universality


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", default="linear,mlp")
    parser.add_argument("--optimal", default="held-out")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--signal", type=float, default=0.05)
    args = parser.parse_args()
    data = synthetic_embeddings(int(UTKFACE_TRAIN * args.scale), int(UTKFACE_TEST * args.scale), args.dim,
                                signal=args.signal)
    print(f"train {data.train.features.shape}, test {data.test.features.shape}, {args.optimal} reading, "
          f"5 folds, 10 random heads")
    total = 0.0
    for head in args.heads.split(","):
        started = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rows = measure_universality([data], UniversalityConfig(n_random=10, head=head, optimal=args.optimal))
        seconds = time.perf_counter() - started
        total += seconds
        for r in rows:
            o = r["optimal"]
            fit = o.get("seconds", 0.0)
            epochs = "" if o.get("epochs") is None else f", {o['epochs']} epochs"
            edge = f", edge {o['edge']}" if o.get("edge") else ""
            print(f"  {head:6s} {r['task']:7s} optimal {o['loss']:.4f} ({o['loss_source']}; l2 {o['l2']:g}{epochs}{edge}) "
                  f"gap {r['gap_mean']:.4f} [{r['gap_ci_low']:.4f}, {r['gap_ci_high']:.4f}]  "
                  f"held-out fit {fit:.1f} s, random heads and scoring {r['seconds'] - fit:.1f} s")
        print(f"  {head}: {seconds:.1f} s{f' ({len(caught)} warnings)' if caught else ''}")
    print(f"  whole measure: {total:.1f} s (goal <= 60 s)")


if __name__ == "__main__":
    main()
