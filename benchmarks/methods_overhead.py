"""Training-step time of the multi-task methods relative to `ew`, each measured in a fresh
process (40 variants in one process churn the heap and inflate later figures), with minor page
faults per step and peak memory.

Setting of the MTL-methods issue: ResNet-50, 3 tasks (7/2/5), 64x64, batch 32, CPU. Printed
beside the methods:
- `floor`: forward + K vector-Jacobian products from z + head backward + optimiser step, with no
  combination (the first task's gradient is the update): the least a gradient method can cost;
- `<method> (old path)`: the combination as repeval did it before the shared per-parameter path
  (flatten each task's gradient into a row, stack a K x P matrix, float32 Gram, w @ G into a new
  buffer, clone into .grad), for the same method's weights.
Goal for pcgrad, mgda, cagrad, imtl, nash: (step / ew) within 1.1x of (floor / ew), and peak
memory no higher than the old path's.

glibc's malloc moves its mmap threshold with the history of frees, so whether a freed 9 MB
gradient goes back to the kernel (and page-faults when next used) differs between processes
doing the same work: measured here, 40 k to 135 k minor faults per step and +-15 % step time.
By default the children pin the threshold (MALLOC_MMAP_THRESHOLD_=32 MiB, glibc's maximum, and
no trimming), so every variant runs under the same allocator policy; `--malloc default` keeps
glibc's adaptive one. Each variant runs `--rounds` times, interleaved, and the median is shown.

    python benchmarks/methods_overhead.py [--backbone resnet50] [--reps 5] [--rounds 2] [--all] [--no-old]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

GRADIENT = ["pcgrad", "mgda", "cagrad", "imtl", "nash"]
OTHERS = ["dwa", "uw", "gradnorm", "autol", "sam", "pta"]
WARMUP = 2


def measure(variant: str, backbone: str, batch_size: int, size: int, reps: int) -> dict:
    """One variant's step in this process: median ms, minor faults per step, peak RSS."""
    import torch

    from repeval.models import MultiTaskModel, build_encoder
    from repeval.tasks import TaskSpec
    from repeval.training.dgr import DGRConfig, DummyGradientRegularizer
    from repeval.training.methods import create_method
    from repeval.training.step import Batch, training_step

    tasks = (TaskSpec("age", 7, tuple("0123456")), TaskSpec("gender", 2, ("m", "f")), TaskSpec("race", 5, tuple("01234")))
    torch.manual_seed(0)
    model = MultiTaskModel(build_encoder(backbone, 3), tasks, dummies=3)
    batch = Batch(torch.randn(batch_size, 3, size, size), [torch.randint(0, t.num_classes, (batch_size,)) for t in tasks])
    meta = Batch(batch.x.flip(0), [y.flip(0) for y in batch.ys])
    name, _, suffix = variant.partition(" ")
    dgr = DummyGradientRegularizer([model.dummy_heads[t.name] for t in tasks], DGRConfig()) if "+dgr" in suffix else None
    if name == "floor":
        method = _floor(len(tasks))
    else:
        method = create_method(name, len(tasks))
        if "old" in suffix:
            method.backward = _old_backward.__get__(method)
    method.attach(model)
    optimizer = torch.optim.Adam([*model.parameters(), *method.parameters()], lr=1e-6)
    times, faults = [], []
    for rep in range(reps + WARMUP):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        started = time.perf_counter()
        training_step(model, batch, method, dgr, optimizer, meta_batch=meta if method.needs_meta_batch else None)
        if rep >= WARMUP:  # the first steps warm the allocator and the optimiser state
            times.append(time.perf_counter() - started)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {"variant": variant, "ms": 1000 * statistics.median(times), "faults": statistics.median(faults),
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "threads": torch.get_num_threads()}


def _floor(num_tasks: int):
    """Everything a gradient method must do, and no combination: the update is task 0's gradient."""
    import torch

    from repeval.training.methods.gradient import GradientMethod, task_gradients

    class Floor(GradientMethod):
        def backward(self, losses, z, z_grad, params):
            head_params = [p for head in params.heads for p in head]
            torch.autograd.backward(losses.sum(), inputs=head_params, retain_graph=True)
            z_task_grads = [torch.autograd.grad(losses[k], z, retain_graph=True)[0] for k in range(len(losses))]
            for p, g in zip(params.shared, task_gradients(z, z_task_grads, params.shared)[0]):
                p.grad = g

    return Floor(num_tasks)


def _old_backward(self, losses, z, z_grad, params):
    """The combination before the shared path (kept here only to measure against)."""
    import torch

    losses = self.task_losses(losses)
    head_params = [p for head in params.heads for p in head]
    torch.autograd.backward(losses.sum(), inputs=head_params + self.parameters(), retain_graph=True)
    rows = []
    for k in range(len(losses)):
        g_z = torch.autograd.grad(losses[k], z, retain_graph=True)[0]
        grads = torch.autograd.grad(z, params.shared, grad_outputs=g_z, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params.shared)]))
    grads = torch.stack(rows)
    update = self.weights((grads @ grads.T).double()).to(grads.dtype) @ grads
    offset = 0
    for p in params.shared:
        p.grad = update[offset : offset + p.numel()].view_as(p).to(p.dtype).clone()
        offset += p.numel()
    if z_grad is not None:
        torch.autograd.backward(z, z_grad)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--all", action="store_true", help="Also the loss-weighting and multi-pass methods.")
    parser.add_argument("--no-old", action="store_true", help="Skip the old combination path.")
    parser.add_argument("--rounds", type=int, default=2, help="Fresh processes per variant, interleaved.")
    parser.add_argument("--malloc", choices=("pinned", "default"), default="pinned")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.backbone, args.batch, args.size, args.reps)))
        return

    variants = ["ew", "floor", *GRADIENT, "pcgrad +dgr"]
    if not args.no_old:
        variants += [*(f"{m} (old path)" for m in GRADIENT), "pcgrad (old path) +dgr"]
    if args.all:
        variants += OTHERS
    env = dict(os.environ)
    if args.malloc == "pinned":
        env.update(MALLOC_MMAP_THRESHOLD_=str(32 << 20), MALLOC_TRIM_THRESHOLD_=str(1 << 40))
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            command = [sys.executable, __file__, "--child", variant, "--backbone", args.backbone, "--batch",
                       str(args.batch), "--size", str(args.size), "--reps", str(args.reps)]
            out = subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout
            runs[variant].append(json.loads(out.strip().splitlines()[-1]))
            print(f"  measured {variant}: {runs[variant][-1]['ms']:.0f} ms", file=sys.stderr)
    results = {v: {k: statistics.median(r[k] for r in rs) if k != "variant" else v for k in rs[0]} for v, rs in runs.items()}
    ew, floor = results["ew"]["ms"], results["floor"]["ms"]
    first = results["ew"]
    print(f"{args.backbone}, 3 tasks, batch {args.batch}, {args.size}x{args.size}, {int(first['threads'])} threads, "
          f"median of {args.reps} steps in each of {args.rounds} fresh processes per variant, malloc {args.malloc}; "
          f"ew = {ew:.0f} ms, floor = {floor / ew:.2f}x ew")
    print(f"  {'variant':24s} {'ms/step':>8s} {'/ ew':>6s} {'/ floor':>8s} {'minor faults/step':>18s} {'peak MB':>8s}")
    for variant, r in results.items():
        print(f"  {variant:24s} {r['ms']:8.0f} {r['ms'] / ew:5.2f}x {r['ms'] / floor:7.2f}x {r['faults']:18.0f} {r['peak_mb']:8.0f}")
    met = all(results[m]["ms"] / floor <= 1.1 for m in GRADIENT)
    print(f"\ngoal: each of {', '.join(GRADIENT)} within 1.1x of the floor: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
