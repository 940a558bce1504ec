"""What a multi-task method is to the training loop: an object that turns the K task losses
of a step (and DGR's extra gradient at z, if any) into gradients.

Most methods only override `backward`. Methods that need more than one pass per step (SAM's
perturbed pass, Auto-lambda's virtual step, PTA's extra decoders) override `step`, which gets
a `StepContext` with closures that run the model; the loop itself never changes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import torch
from torch import nn

from repeval.distributed import average_gradients
from repeval.errors import InvalidChoiceError


@dataclass
class ParamGroups:
    """The parameters a method writes gradients for: the architecture's shared set (the ones
    gradient methods combine), each task's own (its head; MTAN's attention for it), and
    `common` ones outside the shared set that every task reaches (they get the sum of the task
    gradients). `per_task_z`: z is stacked per task (MTAN), task k's part is `z[k]`."""

    shared: list[torch.Tensor]
    heads: list[list[torch.Tensor]]
    common: list[torch.Tensor] = field(default_factory=list)
    per_task_z: bool = False

    def all(self) -> Iterator[torch.Tensor]:
        yield from self.shared
        yield from self.common
        for head in self.heads:
            yield from head


@dataclass
class Pass:
    """One forward pass: per-task losses [K], the representation z, DGR's lambda * dP/dz (None
    without DGR or when DGR already sits inside the task losses), the detached penalties, and
    which tasks had a valid target in the batch (`[K]` bool; None: all of them)."""

    losses: torch.Tensor
    z: torch.Tensor
    z_grad: torch.Tensor | None
    penalties: torch.Tensor | None
    present: torch.Tensor | None = None
    dgr_grads: torch.Tensor | None = None  # lambda dP_k/dz [K, *z], kept for a watched step only


def presence(losses: torch.Tensor, present: torch.Tensor | None) -> torch.Tensor:
    """`present` as a mask on the losses' device (None: every task)."""
    return torch.ones_like(losses, dtype=torch.bool) if present is None else present.to(losses.device)


@dataclass
class StepContext:
    """What `Method.step` may use. `forward(batch)` is the full training pass (DGR included);
    `task_losses(batch, params)` runs the model with the given parameter tensors in place of its
    own (torch.func.functional_call), no DGR. `meta_batch` is a second training batch in an
    independent order, given only to methods with `needs_meta_batch`."""

    model: nn.Module
    batch: Any
    forward: Callable[[Any], Pass]
    task_losses: Callable[[Any, dict[str, torch.Tensor]], torch.Tensor]
    optimizer: torch.optim.Optimizer
    params: ParamGroups
    meta_batch: Any | None = None


@contextlib.contextmanager
def buffers_unchanged(model: nn.Module) -> Iterator[None]:
    """Extra forward passes inside one step must not move batch-norm statistics: the step
    updates them once, in its main pass. The running statistics are restored exactly on exit
    (the dummy heads' buffers never change, so they are not copied)."""
    saved = [
        (b, b.detach().clone())
        for m in model.modules() if getattr(m, "track_running_stats", False)  # every batch/instance norm
        for b in m.buffers(recurse=False)
    ]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in saved:
                b.copy_(value)


class Method:
    """Base class. Subclasses override `backward`, or `combine` for loss weighting, or `step`
    when one pass per step is not enough.

    Convention (documented once for every method): the base objective is the *sum* of task
    losses, and every method returns an update on that scale.

    A task without a valid target in a batch (`Pass.present` False) has loss 0 and a zero
    gradient. Methods with per-task learnable scalars leave that task's scalar alone for the
    step; gradient methods leave a task whose gradient is exactly zero out of the step's solve
    (`GradientMethod`); each method's docstring says what it does.
    """

    needs_meta_batch = False  # set by methods that evaluate a second batch (Auto-lambda)
    supports_rep_grad = False  # gradients at the shared representation (MGDA-UB, IMTL)

    def __init__(self, num_tasks: int):
        self.num_tasks = num_tasks
        # What the last step decided, for `diagnostics`: methods record here as they step.
        self.reported: dict[str, torch.Tensor] = {}

    def attach(self, model: nn.Module) -> None:
        """Called once with the model, before the optimiser is built (PTA adds decoders here)."""

    @property
    def trained_tasks(self) -> tuple[int, ...]:
        """Tasks whose losses (and DGR penalties) train the encoder."""
        return tuple(range(self.num_tasks))

    def prepare(self, ctx: StepContext) -> None:
        """Work before the step's passes (Auto-lambda's meta update); wrappers call it too."""

    def step(self, ctx: StepContext) -> Pass:
        """One optimisation step; returns the main pass (its losses are what the run reports)."""
        self.prepare(ctx)
        out = ctx.forward(ctx.batch)
        ctx.optimizer.zero_grad(set_to_none=True)
        self.backward(out.losses, out.z, out.z_grad, ctx.params, out.present)
        ctx.optimizer.step()
        return out

    def parameters(self) -> list[torch.Tensor]:
        """Learnable state the optimiser must update (e.g. uncertainty weights)."""
        return []

    def to(self, device: torch.device) -> Method:
        """Move learnable state to the model's device."""
        return self

    def backward(self, losses: torch.Tensor, z: torch.Tensor, z_grad: torch.Tensor | None, params: ParamGroups,
                 present: torch.Tensor | None = None) -> None:
        """Accumulate gradients into `.grad`. `z_grad` (DGR's lambda * dP/dz) is added to the
        gradient reaching z after the method has combined the task gradients; `present` is
        `Pass.present`."""
        raise NotImplementedError

    def diagnostics(self) -> dict[str, torch.Tensor]:
        """What the method decided at its last step, for logs: a [K] tensor per name (the task
        weights the step used: `weights`) or a 0-d one (PCGrad's `projections`). No host sync."""
        return dict(self.reported)

    def on_epoch_end(self, epoch: int, mean_losses: torch.Tensor) -> None:
        """Called with the unweighted epoch-mean training loss of each task, over the batches
        where the task had targets (NaN for a task that had none all epoch)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def backward_with(loss: torch.Tensor, z: torch.Tensor, z_grad: torch.Tensor | None) -> None:
    """Backward of a scalar loss with DGR's gradient at z added in the same pass."""
    if z_grad is None:
        loss.backward()
    else:
        torch.autograd.backward([loss, z], [torch.ones_like(loss), z_grad])


class LossWeighting(Method):
    """A method that turns K losses into one scalar: one backward for everything, DGR's
    gradient at z included, so the encoder sees a single backward pass."""

    def combine(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """The scalar to minimise; `present` [K] bool marks tasks with targets in the batch."""
        raise NotImplementedError

    def backward(self, losses: torch.Tensor, z: torch.Tensor, z_grad: torch.Tensor | None, params: ParamGroups,
                 present: torch.Tensor | None = None) -> None:
        backward_with(self.combine(losses, presence(losses, present)), z, z_grad)
        average_gradients(chain(params.all(), self.parameters()))


class LearnsTaskScalars:
    """Mixin for methods with one learnable value per task (UW's log variances, IMTL-L's log
    loss scales): optimised with the model, moved to its device, saved for --resume."""

    scalars: torch.Tensor

    def init_scalars(self, num_tasks: int, value: float) -> None:
        self.scalars = torch.full((num_tasks,), float(value), requires_grad=True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.scalars]

    def to(self, device: torch.device):
        self.scalars = self.scalars.detach().to(device).requires_grad_(True)
        return self

    def state_dict(self) -> dict:
        return {"scalars": self.scalars.detach().cpu()}

    def load_state_dict(self, state: dict) -> None:
        with torch.no_grad():
            self.scalars.copy_(state["scalars"])


class WrapsMethod(Method):
    """A method that changes how the step is taken around a base method (SAM, PTA): the base
    still combines the task losses or gradients; everything stateful is forwarded to it."""

    def __init__(self, num_tasks: int, base: str = "ew"):
        super().__init__(num_tasks)
        from repeval.training.methods import METHODS, create_method

        allowed = [n for n in METHODS.names() if n not in ("single",) and not issubclass(METHODS.get(n), WrapsMethod)]
        if base not in allowed:
            raise InvalidChoiceError(
                f"The 'base' option of {type(self).__name__} must be one of {', '.join(allowed)}. Got {base!r} instead."
            )
        self.base = create_method(base, num_tasks)

    @property
    def needs_meta_batch(self) -> bool:
        return self.base.needs_meta_batch

    @property
    def trained_tasks(self) -> tuple[int, ...]:
        return self.base.trained_tasks

    def attach(self, model: nn.Module) -> None:
        self.base.attach(model)

    def parameters(self) -> list[torch.Tensor]:
        return self.base.parameters()

    def to(self, device: torch.device) -> WrapsMethod:
        self.base = self.base.to(device)
        return self

    def prepare(self, ctx: StepContext) -> None:
        self.base.prepare(ctx)

    def diagnostics(self) -> dict[str, torch.Tensor]:
        return self.base.diagnostics()

    def on_epoch_end(self, epoch: int, mean_losses: torch.Tensor) -> None:
        self.base.on_epoch_end(epoch, mean_losses)

    def state_dict(self) -> dict:
        return {"base": self.base.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.base.load_state_dict(state["base"])
