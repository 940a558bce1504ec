"""One optimisation step, apart from the loop around it: batches on the device, the training
forward (task losses, z, DGR's part) and the method's step. Benchmarks and method tests call
`training_step` directly."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from functools import partial

import torch

from repeval.datasets import InputNormalizer
from repeval.errors import InvalidChoiceError
from repeval.models import MultiTaskModel
from repeval.training.dgr import DummyGradientRegularizer
from repeval.training.diagnostics import StepWatch
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


def resolve_precision(precision: str, device: torch.device) -> str:
    """`--precision`: "auto" is bf16 on CUDA devices that support it, fp32 elsewhere."""
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def resolve_channels_last(channels_last: bool | None, device: torch.device) -> bool:
    """`--channels-last`: None (auto) is on for CUDA, where cuDNN's convolutions prefer it."""
    return device.type == "cuda" if channels_last is None else channels_last


@dataclass(frozen=True)
class Execution:
    """How a run executes on this machine: its config's "auto" options resolved for the device.
    Recorded beside the config in `config.json` and in every checkpoint."""

    device: torch.device
    precision: str  # "fp32" or "bf16"
    channels_last: bool
    num_workers: int
    data_on_device: bool = False

    @classmethod
    def of(cls, device: str, precision: str = "auto", channels_last: bool | None = None,
           num_workers: int | None = None, data_on_device: bool = False) -> Execution:
        resolved = resolve_device(device)
        if num_workers is None:  # the cores compute on a CPU; on a GPU they feed it
            num_workers = min(8, os.cpu_count() or 1) if resolved.type == "cuda" and not data_on_device else 0
        return cls(resolved, resolve_precision(precision, resolved), resolve_channels_last(channels_last, resolved),
                   num_workers, data_on_device)

    def to_dict(self) -> dict:
        return {"device": str(self.device), "precision": self.precision, "channels_last": self.channels_last,
                "num_workers": self.num_workers, "data_on_device": self.data_on_device}


def to_device(images: torch.Tensor, targets, normalize: InputNormalizer, device: torch.device,
              channels_last: bool | None = None) -> Batch:
    """`targets` is a `[B, K]` label tensor (classification datasets) or a sequence of K
    per-task tensors (dense datasets). `channels_last`: None follows the device (CUDA: on)."""
    # uint8 crosses the bus (pinned, non-blocking) and is normalised on the device.
    images = images.to(device, non_blocking=True)
    x = normalize(images)
    if resolve_channels_last(channels_last, device):
        x = x.contiguous(memory_format=torch.channels_last)
    if isinstance(targets, torch.Tensor):
        return Batch(x, list(targets.to(device, non_blocking=True).unbind(dim=1)))
    return Batch(x, [t.to(device, non_blocking=True) for t in targets])


def autocast(device: torch.device, precision: str | None = None):
    """bf16 autocast when `precision` is "bf16" (on CPU too); None follows the device: bf16 on
    CUDA, float32 on CPU. Losses, DGR's penalty (z is lifted to float32) and metrics are
    computed outside it, in float32 or float64."""
    precision = resolve_precision("auto", device) if precision is None else precision
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def param_groups(model: MultiTaskModel) -> ParamGroups:
    return ParamGroups(model.shared_parameters(), [model.task_parameters(k) for k in range(len(model.tasks))],
                       model.common_parameters(), model.per_task)


def forward_pass(model: MultiTaskModel, regularizer: DummyGradientRegularizer | None, batch: Batch,
                 precision: str | None = None, watch: StepWatch | None = None) -> Pass:
    """The training forward: task losses, z, and DGR's part (the regulariser decides where its
    gradient joins: `DummyGradientRegularizer.join`). `watch` taps the heads' inputs
    (`repeval.training.diagnostics`)."""
    with autocast(batch.x.device, precision):
        z = model.encode(batch.x)
        inputs = model.head_inputs(z)
        outputs = model.heads_on(inputs if watch is None else watch.tap(inputs))
    losses, present = model.task_losses(outputs, batch.ys), model.task_present(batch.ys)
    if regularizer is None:
        return Pass(losses, z, None, None, present)
    losses, z_grad, penalties, task_grads = regularizer.join(losses, z, batch.ys)
    return Pass(losses, z, z_grad, penalties, present, task_grads if watch is not None else None)


def functional_task_losses(model: MultiTaskModel, batch: Batch, params: dict[str, torch.Tensor],
                           precision: str | None = None) -> torch.Tensor:
    """Task losses [K] of the model run with `params` in place of its own parameters."""
    with autocast(batch.x.device, precision):
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
    precision: str | None = None,
    watch: StepWatch | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimisation step. Returns the detached task losses and DGR penalties (no sync).
    `params` (from `param_groups(model)`) can be built once per run and passed in; `precision`
    ("fp32", "bf16"; None: the device's default) is the forward passes' autocast; `watch`
    (`repeval.training.diagnostics.StepWatch`) collects the step's diagnostics."""
    ctx = StepContext(
        model=model, batch=batch, forward=partial(forward_pass, model, regularizer, precision=precision, watch=watch),
        task_losses=partial(functional_task_losses, model, precision=precision), optimizer=optimizer,
        params=params or param_groups(model), meta_batch=meta_batch,
    )
    out = method.step(ctx)
    if watch is not None:
        watch.finish(out.losses, out.penalties, out.dgr_grads, model.per_task)
    return out.losses.detach(), out.penalties
