"""One optimisation step, apart from the loop around it: batches on the device, the training
forward (task losses, z, DGR's part) and the method's step. Benchmarks and method tests call
`training_step` directly."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial

import torch

from repeval.datasets import InputNormalizer
from repeval.errors import InvalidChoiceError
from repeval.models import MultiTaskModel
from repeval.training.dgr import DummyGradientRegularizer
from repeval.training.methods import Method, ParamGroups
from repeval.training.methods.base import Pass, StepContext


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidChoiceError("--device cuda was asked for but no CUDA device is available; use auto or cpu")
    return torch.device(name)


@dataclass
class Batch:
    """A batch on the device: normalised float images and one target per task (a label vector
    for classification, a map for dense kinds)."""

    x: torch.Tensor
    ys: list[torch.Tensor]


def to_device(images: torch.Tensor, targets, normalize: InputNormalizer, device: torch.device) -> Batch:
    """`targets` is a `[B, K]` label tensor (classification datasets) or a sequence of K
    per-task tensors (dense datasets)."""
    # uint8 crosses the bus (pinned, non-blocking) and is normalised on the device.
    images = images.to(device, non_blocking=True)
    x = normalize(images)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    if isinstance(targets, torch.Tensor):
        return Batch(x, list(targets.to(device, non_blocking=True).unbind(dim=1)))
    return Batch(x, [t.to(device, non_blocking=True) for t in targets])


def autocast(device: torch.device):
    """bf16 autocast on CUDA only; CPU runs in float32."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def param_groups(model: MultiTaskModel) -> ParamGroups:
    return ParamGroups(model.shared_parameters(), [model.task_parameters(k) for k in range(len(model.tasks))],
                       model.common_parameters(), model.per_task)


def forward_pass(model: MultiTaskModel, regularizer: DummyGradientRegularizer | None, batch: Batch) -> Pass:
    """The training forward: task losses, z, and DGR's part (the regulariser decides where its
    gradient joins: `DummyGradientRegularizer.join`)."""
    with autocast(batch.x.device):
        z = model.encode(batch.x)
        outputs = model.predict(z)
    losses = model.task_losses(outputs, batch.ys)
    if regularizer is None:
        return Pass(losses, z, None, None)
    losses, z_grad, penalties = regularizer.join(losses, z, batch.ys)
    return Pass(losses, z, z_grad, penalties)


def functional_task_losses(model: MultiTaskModel, batch: Batch, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Task losses [K] of the model run with `params` in place of its own parameters."""
    with autocast(batch.x.device):
        outputs = torch.func.functional_call(model, params, (batch.x,))
    return model.task_losses(outputs, batch.ys)


def training_step(
    model: MultiTaskModel,
    batch: Batch,
    method: Method,
    regularizer: DummyGradientRegularizer | None,
    optimizer: torch.optim.Optimizer,
    params: ParamGroups | None = None,
    meta_batch: Batch | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimisation step. Returns the detached task losses and DGR penalties (no sync).
    `params` (from `param_groups(model)`) can be built once per run and passed in."""
    ctx = StepContext(
        model=model, batch=batch, forward=partial(forward_pass, model, regularizer),
        task_losses=partial(functional_task_losses, model), optimizer=optimizer,
        params=params or param_groups(model), meta_batch=meta_batch,
    )
    out = method.step(ctx)
    return out.losses.detach(), out.penalties
