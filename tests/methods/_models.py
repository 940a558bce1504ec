"""A tiny multi-task model and batches shared by the method tests."""

from __future__ import annotations

import torch

from repeval.models import MultiTaskModel, build_encoder
from repeval.tasks import TaskSpec
from repeval.training.methods import create_method

TASKS = (TaskSpec("a", 3, ("0", "1", "2")), TaskSpec("b", 2, ("0", "1")))
# Options a method cannot run without; every other method runs with its defaults.
REQUIRED_OPTIONS = {"single": {"task": "a"}}


def tiny_model(dummies: int = 0, seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    return MultiTaskModel(build_encoder("test_resnet", in_chans=1), TASKS, hidden=16, dummies=dummies)


def attached_method(name: str, model: MultiTaskModel, **options):
    method = create_method(name, len(TASKS), **{**REQUIRED_OPTIONS.get(name, {}), **options})
    method.attach(model)
    return method


def batches(n: int, seed: int = 1, size: int = 8):
    from repeval.training.step import Batch

    g = torch.Generator().manual_seed(seed)
    return [
        Batch(torch.randn(size, 1, 16, 16, generator=g),
              [torch.randint(0, 3, (size,), generator=g), torch.randint(0, 2, (size,), generator=g)])
        for _ in range(n)
    ]
