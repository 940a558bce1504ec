"""DGR's cost on the dense SPLIT or MTAN network (`--arch`), measured side by side in one process.

Dilated ResNet-50 (output stride 8) with a DeepLabv3 head per task, NYUv2's three tasks (13-class
segmentation, depth, normals), EW, d = 1 and d = 3 dummy heads per task. Variants, timed
round-robin so drift hits all alike:

- vanilla:           repeval's training step, no regulariser
- dgr exact / fd / fd-forward: + DGR (double backward through the dummy heads / central or
                     one-sided finite differences), z re-used
- floor:             the dummy heads' own work alone, on a detached z: their forward, backward and
                     (exact) double backward, i.e. the regulariser's call, nothing of the encoder
- reference recipe:  the authors' scheme: base backward with retain_graph, then per dummy set two
                     autograd.grad calls, a perturbed whole-model forward and one more encoder gradient
- gradient methods:  step time of pcgrad, mgda, cagrad, imtl and nash, for scale

Goals: DGR step - vanilla step <= 1.15 x floor (no work beyond the dummy heads' own), and below the
reference recipe's overhead by at least the encoder's extra forward and backward per dummy set
("encoder fwd+bwd", timed alone).

At small inputs on a CPU the dummy heads' cost is bound by their parameters (48 M per dummy set:
gradients, perturbed copies), not by their activations; the default size is large enough that
activations dominate, as they do at the reference's 288x384.

    python benchmarks/dense_overhead.py [--arch split|mtan] [--size 192 256] [--batch 2] [--reps 3] [--device cpu|cuda]

MTAN: each task's dummies read that task's attended feature; the reference recipe's encoder
gradient is taken of the architecture's shared parameters.

On a GPU use the reference size: --size 288 384 --batch 4 (bf16 autocast and channels_last are on).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from repeval.heads import HeadConfig
from repeval.kinds import kind_of
from repeval.archs import build_arch_encoder
from repeval.models import MultiTaskModel, to_channels_last
from repeval.tasks import TaskSpec
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer
from repeval.training.methods import create_method
from repeval.training.step import Batch, autocast, param_groups, training_step

TASKS = (TaskSpec("seg", 13, kind="segmentation"), TaskSpec("depth", 1, kind="depth"), TaskSpec("normal", 3, kind="normals"))


def reference_step(model, dummy_sets, batch, optimizer, lam=0.1, eps=1e-3):
    """The authors' released recipe (compute_hessian in their DGR_train.py) on this network."""
    encoder_params = model.shared_parameters()
    with autocast(batch.x.device):
        z = model.encode(batch.x)
        outputs = model.predict(z)
    loss = model.task_losses(outputs, batch.ys).sum()
    optimizer.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    for heads in dummy_sets:
        params = [p for h in heads for p in h.parameters()]
        with autocast(batch.x.device):
            dummy_loss = sum(k.loss(h(model.task_input(z, i)), y) for i, (k, h, y) in enumerate(zip(model.kinds, heads, batch.ys)))
        d = torch.autograd.grad(dummy_loss, params, retain_graph=True)
        grad = torch.autograd.grad(dummy_loss, encoder_params, retain_graph=True, allow_unused=True)
        step = eps / torch.sqrt(sum((g.float() * g.float()).sum() for g in d))
        with torch.no_grad():
            for p, g in zip(params, d):
                p.add_(step * g)
        with autocast(batch.x.device):
            z_plus = model.encode(batch.x)  # the whole encoder again
            dummy_plus = sum(k.loss(h(model.task_input(z_plus, i)), y)
                             for i, (k, h, y) in enumerate(zip(model.kinds, heads, batch.ys)))
        grad_plus = torch.autograd.grad(dummy_plus, encoder_params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, d):
                p.sub_(step * g)
            scale = 2 * (dummy_plus - dummy_loss) / eps**2 * lam / len(dummy_sets)
            for p, g0, g1 in zip(encoder_params, grad, grad_plus):
                if g0 is not None and g1 is not None:
                    p.grad.add_(scale * (g1 - g0))
    optimizer.step()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--arch", default="split", choices=("split", "mtan"))
    parser.add_argument("--size", type=int, nargs=2, default=(192, 256))
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--width", type=int, default=256, help="ASPP channels (256: the reference)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--methods", default="pcgrad,mgda,cagrad,imtl,nash")
    parser.add_argument("--dummies", type=int, nargs="+", default=(1, 3), help="dummy heads per task to time")
    args = parser.parse_args()
    device = torch.device(args.device)
    h, w = args.size

    torch.manual_seed(0)
    encoder = build_arch_encoder(args.arch, args.backbone, num_tasks=len(TASKS), dense=True, input_size=(h, w))
    side = encoder.map_side(h, w)
    model = MultiTaskModel(encoder, TASKS, dummies=3, head_config=HeadConfig(width=args.width), map_side=side).to(device)
    if device.type == "cuda":
        model = to_channels_last(model)  # the dummies' stacked 5-D weights stay as they are
    kinds = [kind_of(t) for t in TASKS]
    g = torch.Generator().manual_seed(0)
    ys = [torch.randint(-1, 13, (args.batch, h, w), generator=g),
          torch.rand(args.batch, 1, h, w, generator=g) * 5,
          torch.nn.functional.normalize(torch.randn(args.batch, 3, h, w, generator=g), dim=1)]
    batch = Batch(torch.randn(args.batch, 3, h, w, generator=g).to(device), [y.to(device) for y in ys])
    if device.type == "cuda":
        batch.x = batch.x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    params = param_groups(model)
    ew = create_method("ew", len(TASKS))
    def encoder_forward_backward():
        with autocast(device):
            z = model.encode(batch.x)
        z.float().sum().backward()
        optimizer.zero_grad(set_to_none=True)

    variants = {"vanilla": lambda: training_step(model, batch, ew, None, optimizer, params),
                "encoder fwd+bwd": encoder_forward_backward}
    for d in args.dummies:
        heads = [model.dummy_heads[t.name] for t in TASKS]
        if d != 3:  # the model holds 3; other counts get their own stacks
            from repeval.models import DummyHeads

            heads = [DummyHeads(k, encoder.num_features, model.head_config, d, seed=7 + i, map_side=side).to(device)
                     for i, k in enumerate(kinds)]
        per_task = model.per_task
        regs = {"exact": DummyGradientRegularizer(heads, DGRConfig(lam=0.1), per_task_z=per_task),
                "finite-diff": DummyGradientRegularizer(heads, DGRConfig(lam=0.1, estimator="finite-diff"), per_task_z=per_task),
                "fd-forward": DummyGradientRegularizer(heads, DGRConfig(lam=0.1, estimator="finite-diff", fd_scheme="forward"),
                                                       per_task_z=per_task)}
        with torch.no_grad(), autocast(device):
            z_detached = model.encode(batch.x).detach()
        torch.manual_seed(1)
        dummy_sets = [[k.build_head(encoder.num_features, model.head_config, side).to(device) for k in kinds]
                      for _ in range(d)]
        for est, reg in regs.items():
            variants[f"d={d} dgr {est}"] = lambda r=reg: training_step(model, batch, ew, r, optimizer, params)
            variants[f"d={d} floor {est}"] = lambda r=reg: r(z_detached, batch.ys)
        variants[f"d={d} reference recipe"] = lambda s=dummy_sets: reference_step(model, s, batch, optimizer)
    for name in filter(None, args.methods.split(",")):
        method = create_method(name, len(TASKS))
        method.attach(model)
        variants[name] = lambda m=method: training_step(model, batch, m, None, optimizer, params)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(args.reps + 1):
        for name, step in variants.items():
            synchronize(device)
            started = time.perf_counter()
            step()
            synchronize(device)
            if rep > 0:  # the first round warms up allocators and kernels
                times[name].append(time.perf_counter() - started)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    base = med["vanilla"]
    print(f"{args.arch.upper()}: {args.backbone} dilated (OS 8) + DeepLabv3 heads (width {args.width}, rates {model.heads['seg'][0].branches[1][0].dilation[0]}, ...), "
          f"3 tasks, batch {args.batch}, {h}x{w} on {device} ({torch.get_num_threads()} threads), median of {args.reps} steps")
    for name, t in med.items():
        print(f"  {name:24s} {t * 1000:9.1f} ms   {t / base:6.3f}x vanilla")
    for d in args.dummies:
        for est in ("exact", "finite-diff", "fd-forward"):
            overhead = med[f"d={d} dgr {est}"] - base
            floor = med[f"d={d} floor {est}"]
            reference = med[f"d={d} reference recipe"] - base
            encoder = d * med["encoder fwd+bwd"]
            print(f"d={d} {est:11s}: DGR overhead {overhead * 1000:8.1f} ms = {overhead / floor:5.2f}x floor "
                  f"(goal <= 1.15); reference recipe overhead {reference * 1000:8.1f} ms: repeval saves "
                  f"{(reference - overhead) * 1000:8.1f} ms = {(reference - overhead) / encoder:5.2f}x the encoder's "
                  f"forward+backward per dummy set (goal >= 1)")


if __name__ == "__main__":
    main()
