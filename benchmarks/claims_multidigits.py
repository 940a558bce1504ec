"""What DGR does on MultiDigits, beyond training-seed noise: vanilla against DGR at three values
of lambda, 5 training seeds each, on the demo's non-saturated setting (2,000 canvases, 6 px
jitter, 10 epochs). Paired verdicts, seed by seed, for the trained heads' test accuracy, the
probes (dt, svm, knn) and the universality gap (linear and MLP heads, training and test split).
The table goes into docs/benchmarks.md ("What DGR does on MultiDigits"), whatever it says.

    python benchmarks/claims_multidigits.py [--seeds 5] [--lambdas 0.1,0.3,1] [--out runs/claims]

Runs, probes and universality files stay in --out; rerunning reuses finished runs. About 15
minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from collections import Counter
from pathlib import Path

from repeval import __version__
from repeval.app.demo import DEMO_DATA, DEMO_EPOCHS, DEMO_LR_STEP, UNIVERSALITY, compare_to_reference, measure_runs, train_configs
from repeval.training.config import DGRConfig, TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--lambdas", default="0.1,0.3,1")
    parser.add_argument("--out", type=Path, default=Path("runs/claims"))
    args = parser.parse_args()
    started = time.perf_counter()
    seeds = tuple(range(args.seeds))
    lambdas = [float(v) for v in args.lambdas.split(",")]
    base = TrainConfig(dataset="multidigits", dataset_args=dict(DEMO_DATA), epochs=DEMO_EPOCHS, lr_step=DEMO_LR_STEP,
                       out_dir=str(args.out), progress=False)
    configs = {"vanilla": None, **{f"dgr-{lam:g}": DGRConfig(lam=lam) for lam in lambdas}}
    runs = train_configs(args.out, base, configs, seeds)
    histories, probe_rows, universality, _ = measure_runs(args.out, runs)
    tasks = list(next(iter(histories.values()))[-1]["test_accuracy"])
    comparisons = compare_to_reference("vanilla", histories, probe_rows, universality, tasks, seeds)

    names = list(dict.fromkeys(c["b"] for c in comparisons))
    rows: dict[tuple[str, str], dict[str, dict]] = {}
    for c in comparisons:
        rows.setdefault((c["quantity"], c["task"]), {})[c["b"]] = c
    print(f"MultiDigits ({DEMO_DATA}, {DEMO_EPOCHS} epochs, test_resnet), {len(seeds)} training seeds per configuration; "
          f"DGR - vanilla per seed: mean [95 % t-interval], verdict for DGR. Accuracies in points, gaps in nats; "
          f"universality: held-out optimal head ({UNIVERSALITY.cv}-fold CV on the training split), scored on the test split.\n")
    header = ["quantity", "task", *[f"DGR λ={n.removeprefix('dgr-')}" for n in names]]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (quantity, task), by_name in rows.items():
        scale = 100.0 if "accuracy" in quantity else 1.0
        cells = []
        for name in names:
            d = by_name[name]["b_minus_a"]
            diff = d["difference"]
            cells.append(f"{diff['mean'] * scale:+.2f} [{diff['ci_low'] * scale:+.2f}, {diff['ci_high'] * scale:+.2f}] "
                         f"{_short(d['verdict'])}")
        print(f"| {quantity} | {task} | " + " | ".join(cells) + " |")
    print()
    for name in names:
        counts = Counter(_short(c["b_minus_a"]["verdict"]) for c in comparisons if c["b"] == name)
        print(f"DGR λ={name.removeprefix('dgr-')}: better {counts['better']}, worse {counts['worse']}, "
              f"no detectable difference {counts['n.s.']} of {sum(counts.values())}")
    seconds = round(time.perf_counter() - started, 1)
    (args.out / "claims.json").write_text(json.dumps({
        "repeval_version": __version__, "seeds": list(seeds), "lambdas": lambdas, "train_config": base.resolved().to_dict(),
        "universality": asdict(UNIVERSALITY), "seconds": seconds, "comparisons": comparisons}, indent=1))
    print(f"\n{seconds} s; every number with its configuration in {args.out}/claims.json")


def _short(verdict: str) -> str:
    return verdict if verdict in ("better", "worse") else "n.s."


if __name__ == "__main__":
    main()
