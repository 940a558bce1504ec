"""How big is DGR's penalty next to the task losses? Measurements behind the default lambda.

A. At initialisation, for each reading (norm / squared): the ratio of the penalty's gradient at z
   to the task losses' gradient at z, ||dP/dz|| / ||d(sum L)/dz||, on MultiDigits/test_resnet and
   on a UTKFace-shaped ResNet-50 (3 tasks 7/2/5, 64x64, random images): lambda * ratio is the
   share of the encoder's gradient that DGR contributes.
B. Short MultiDigits runs over a lambda grid for each reading: the final penalty P (DGR's
   objective; lambda=0 measures it without applying it) and test accuracy. A default lambda should
   cut P clearly below the lambda=0 run without costing accuracy.

    python benchmarks/dgr_scale.py [--epochs 2] [--skip-resnet50]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
import torch.nn.functional as F

from repeval import datasets
from repeval.datasets import normalize_batch
from repeval.models import MultiTaskModel, build_encoder
from repeval.tasks import TaskSpec
from repeval.training.config import TrainConfig
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer
from repeval.training.loop import train
from repeval.training.run import read_metrics


def gradient_ratio(model: MultiTaskModel, x: torch.Tensor, ys: list[torch.Tensor], penalty: str) -> float:
    z = model.encode(x)
    losses = sum(F.cross_entropy(lg, y) for lg, y in zip(model.predict(z), ys))
    (task_grad,) = torch.autograd.grad(losses, z)
    reg = DummyGradientRegularizer([model.dummy_heads[t.name] for t in model.tasks], DGRConfig(lam=1.0, penalty=penalty))
    dgr_grad, _ = reg(z, ys)
    return (dgr_grad.norm() / task_grad.norm()).item()


def part_a(skip_resnet50: bool) -> None:
    torch.manual_seed(0)
    bundle = datasets.build("multidigits", n_train=256, n_test=8)
    images, labels = bundle.train.__getitems__(list(range(64)))
    x = normalize_batch(images, bundle.input)
    cases = [("multidigits/test_resnet", MultiTaskModel(build_encoder("test_resnet", 1), bundle.tasks, dummies=3), x,
              list(labels.unbind(1)))]
    if not skip_resnet50:
        tasks = (TaskSpec("age", 7, tuple("0123456")), TaskSpec("gender", 2, ("m", "f")), TaskSpec("race", 5, tuple("01234")))
        cases.append(("utkface-shaped/resnet50", MultiTaskModel(build_encoder("resnet50", 3), tasks, dummies=3),
                      torch.randn(32, 3, 64, 64), [torch.randint(0, t.num_classes, (32,)) for t in tasks]))
    print("A. ||dP/dz|| / ||d(sum L)/dz|| at initialisation (lambda = 1)")
    for name, model, xb, ys in cases:
        for penalty in ("norm", "squared"):
            print(f"   {name:26s} {penalty:8s} {gradient_ratio(model, xb, ys, penalty):10.4g}")


def part_b(epochs: int) -> None:
    grid = {"norm": [0.0, 0.01, 0.1, 0.3, 1.0], "squared": [0.0, 0.01, 0.1, 0.3, 1.0]}
    print(f"\nB. MultiDigits, {epochs} epochs, test_resnet: final mean penalty P and mean test accuracy")
    with tempfile.TemporaryDirectory() as out:
        for penalty, lams in grid.items():
            for lam in lams:
                cfg = TrainConfig(epochs=epochs, out_dir=out, progress=False, dgr=DGRConfig(lam=lam, penalty=penalty))
                final = read_metrics(train(cfg))[-1]
                p = statistics.mean(final["dgr_penalty"].values())
                acc = statistics.mean(final["test_accuracy"].values())
                print(f"   {penalty:8s} lambda={lam:<6g} P={p:9.4f}  accuracy={acc:.4f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--skip-resnet50", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    part_a(args.skip_resnet50)
    part_b(args.epochs)
