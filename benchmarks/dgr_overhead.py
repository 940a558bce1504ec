"""Training-step time of DGR over vanilla, measured side by side in one process.

Setting of the foundation issue: ResNet-50, 3 tasks (7/2/5 classes, as UTKFace), d=3 dummy heads
per task, batch 32, 64x64 inputs, CPU, Adam. Variants, timed round-robin so drift hits all alike:

- vanilla:          repeval's training step, EW, no regulariser
- dgr exact:        + DGR, double backward through the dummy heads only, z re-used
- dgr finite-diff:  + DGR, +-eps along each dummy's normalised gradient, z re-used
- authors' recipe:  the released code's scheme: base backward with retain_graph, then per dummy
                    set two autograd.grad calls, a perturbed *whole-model* forward and one more
                    encoder gradient (squared penalty, one-sided difference)

- dgr exact, watched: the exact step as `repeval train` runs its first and every log_every-th
                    step: diagnostics taps, DGR's pull, the method's weights, the host sync of a
                    TensorBoard write (`repeval.training.diagnostics`)

Goals: both repeval estimators <= 1.05x vanilla; the diagnostics' cost, spread over log_every
(20) steps, <= 2 % of a step.

    python benchmarks/dgr_overhead.py [--reps 8] [--backbone resnet50] [--batch 32] [--skip-authors]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from repeval.heads import mlp_head
from repeval.models import MultiTaskModel, build_encoder
from repeval.tasks import TaskSpec
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer
from repeval.training.diagnostics import StepWatch, method_values
from repeval.training.step import Batch, training_step
from repeval.training.methods import EqualWeighting

TASKS = (TaskSpec("age", 7, tuple("0123456")), TaskSpec("gender", 2, ("m", "f")), TaskSpec("race", 5, tuple("01234")))


def authors_step(model, dummy_sets, batch, optimizer, lam=1e-6, eps=1e-4):
    """One step of the authors' released recipe (UTKFACE/main.py, compute_hessian)."""
    encoder_params = list(model.encoder.parameters())
    z = model.encode(batch.x)
    loss = sum(F.cross_entropy(lg, y) for lg, y in zip(model.predict(z), batch.ys))
    optimizer.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    for heads in dummy_sets:
        params = [p for h in heads for p in h.parameters()]
        dummy_loss = sum(F.cross_entropy(h(z), y) for h, y in zip(heads, batch.ys))
        d = torch.autograd.grad(dummy_loss, params, retain_graph=True)
        grad = torch.autograd.grad(dummy_loss, encoder_params, retain_graph=True)
        step = eps / torch.sqrt(sum((g * g).sum() for g in d))
        with torch.no_grad():
            for p, g in zip(params, d):
                p.add_(step * g)
        z_plus = model.encode(batch.x)  # the whole model again
        dummy_plus = sum(F.cross_entropy(h(z_plus), y) for h, y in zip(heads, batch.ys))
        grad_plus = torch.autograd.grad(dummy_plus, encoder_params)
        with torch.no_grad():
            for p, g in zip(params, d):
                p.sub_(step * g)
            scale = 2 * (dummy_plus - dummy_loss) / eps**2 * lam / len(dummy_sets)
            for p, g0, g1 in zip(encoder_params, grad, grad_plus):
                p.grad.add_(scale * (g1 - g0))
    optimizer.step()


def watched_step(model, batch, method, regularizer, optimizer) -> None:
    """A step as the loop watches it, with the host sync of a TensorBoard write."""
    watch = StepWatch(len(TASKS))
    training_step(model, batch, method, regularizer, optimizer, watch=watch)
    values = {**watch.values, **method_values(method.diagnostics())}
    [float(v) for v in values.values()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--dummies", type=int, default=3)
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--skip-authors", action="store_true", help="leave out the slow authors' recipe")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = MultiTaskModel(build_encoder(args.backbone, 3), TASKS, dummies=args.dummies)
    dim = model.num_features
    dummy_sets = [[mlp_head(dim, 64, t.num_classes) for t in TASKS] for _ in range(args.dummies)]
    for h in (h for s in dummy_sets for h in s):
        h.requires_grad_(True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-5)
    batch = Batch(torch.randn(args.batch, 3, args.size, args.size), [torch.randint(0, t.num_classes, (args.batch,)) for t in TASKS])
    heads = [model.dummy_heads[t.name] for t in TASKS]
    method = EqualWeighting(len(TASKS))
    variants = {
        "vanilla": lambda: training_step(model, batch, method, None, optimizer),
        "dgr exact": lambda: training_step(
            model, batch, method, DummyGradientRegularizer(heads, DGRConfig(lam=0.1)), optimizer),
        "dgr finite-diff": lambda: training_step(
            model, batch, method, DummyGradientRegularizer(heads, DGRConfig(lam=0.1, estimator="finite-diff")), optimizer),
        "dgr exact, watched": lambda: watched_step(model, batch, method, DummyGradientRegularizer(heads, DGRConfig(lam=0.1)),
                                                   optimizer),
        "authors' recipe": lambda: authors_step(model, dummy_sets, batch, optimizer),
    }
    if args.skip_authors:
        del variants["authors' recipe"]
    times: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(args.reps + 1):
        for name, step in variants.items():
            started = time.perf_counter()
            step()
            if rep > 0:  # the first round warms up allocators and kernels
                times[name].append(time.perf_counter() - started)

    base = statistics.median(times["vanilla"])
    print(f"{args.backbone}, 3 tasks, d={args.dummies}, batch {args.batch}, {args.size}x{args.size}, "
          f"{torch.get_num_threads()} threads, median of {args.reps} steps")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:20s} {med * 1000:8.1f} ms/step   {med / base:5.3f}x vanilla")
    exact, watched = statistics.median(times["dgr exact"]), statistics.median(times["dgr exact, watched"])
    print(f"  diagnostics: a watched step costs {100 * (watched / exact - 1):+.1f} % of an exact step; spread over "
          f"log_every={args.log_every} steps, {100 * (watched / exact - 1) / args.log_every:+.2f} % per step (goal <= 2 %)")


if __name__ == "__main__":
    main()
