"""Training-step time of every registered method relative to `ew`, with and without DGR,
measured side by side in one process (round-robin, median).

Setting of the MTL-methods issue: ResNet-50, 3 tasks (7/2/5), 64x64, batch 32, CPU. Expected:
gradient methods cost about K encoder backwards; `--dgr` (order "after", the default) adds one
more vector-Jacobian product of z to a gradient method (DGR's gradient is added after the
combination), and almost nothing to a loss-weighting method (it joins the single backward).
DGR order "before" and --rep-grad (MGDA, IMTL) are measured too: both avoid that extra pass.
Auto-lambda and SAM run several passes per step by design (see their docstrings).

    python benchmarks/methods_overhead.py [--backbone resnet50] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from repeval.models import MultiTaskModel, build_encoder
from repeval.tasks import TaskSpec
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer
from repeval.training.step import Batch, training_step
from repeval.training.methods import METHODS, create_method, rep_grad_methods

TASKS = (TaskSpec("age", 7, tuple("0123456")), TaskSpec("gender", 2, ("m", "f")), TaskSpec("race", 5, tuple("01234")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()

    torch.manual_seed(0)
    model = MultiTaskModel(build_encoder(args.backbone, 3), TASKS, dummies=3)
    batch = Batch(torch.randn(args.batch, 3, args.size, args.size),
                  [torch.randint(0, t.num_classes, (args.batch,)) for t in TASKS])
    heads = [model.dummy_heads[t.name] for t in TASKS]
    after = DummyGradientRegularizer(heads, DGRConfig())
    before = DummyGradientRegularizer(heads, DGRConfig(order="before"))
    rows = [(name, {}) for name in METHODS.names() if name != "single"]
    rows += [(name, {"rep_grad": True}) for name in rep_grad_methods()]
    variants = {}
    for name, options in rows:
        label = name + (" rep" if options else "")
        method = create_method(name, len(TASKS), **options)
        method.attach(model)
        optimizer = torch.optim.Adam([*model.parameters(), *method.parameters()], lr=1e-6)
        for suffix, reg in (("", None), (" + dgr", after), (" + dgr before", before)):
            variants[label + suffix] = (method, optimizer, reg)
    meta = Batch(batch.x.flip(0), [y.flip(0) for y in batch.ys])
    times: dict[str, list[float]] = {k: [] for k in variants}
    for rep in range(args.reps + 1):
        for key, (method, optimizer, reg) in variants.items():
            started = time.perf_counter()
            training_step(model, batch, method, reg, optimizer, meta_batch=meta if method.needs_meta_batch else None)
            if rep:
                times[key].append(time.perf_counter() - started)
    base = statistics.median(times["ew"])
    print(f"{args.backbone}, 3 tasks, batch {args.batch}, {args.size}x{args.size}, {torch.get_num_threads()} threads, "
          f"median of {args.reps} steps; ratios vs ew ({base * 1000:.0f} ms)")
    print(f"  {'method':11s} {'plain':>6s} {'+dgr':>6s} {'+dgr before':>12s}   dgr adds (after / before)")
    for name, options in rows:
        label = name + (" rep" if options else "")
        plain, dgr, dgr_before = (statistics.median(times[label + s]) for s in ("", " + dgr", " + dgr before"))
        print(f"  {label:11s} {plain / base:5.2f}x {dgr / base:5.2f}x {dgr_before / base:11.2f}x   "
              f"{100 * (dgr / plain - 1):+5.1f}% / {100 * (dgr_before / plain - 1):+5.1f}%")


if __name__ == "__main__":
    main()
