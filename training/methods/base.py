"""What a multi-task method is to the training loop: an object that turns the K task losses
of a step (and DGR's extra gradient at z, if any) into gradients."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class ParamGroups:
    """The parameters a method writes gradients for: the shared encoder's, and each task head's."""

    shared: list[torch.Tensor]
    heads: list[list[torch.Tensor]]


class Method:
    """Base class. Subclasses override `backward`, or `combine` for loss weighting.

    Convention (documented once for every method): the base objective is the *sum* of task
    losses, and every method returns an update on that scale.
    """

    def __init__(self, num_tasks: int):
        self.num_tasks = num_tasks

    def parameters(self) -> list[torch.Tensor]:
        """Learnable state the optimiser must update (e.g. uncertainty weights)."""
        return []

    def to(self, device: torch.device) -> Method:
        """Move learnable state to the model's device."""
        return self

    def backward(self, losses: torch.Tensor, z: torch.Tensor, z_grad: torch.Tensor | None, params: ParamGroups) -> None:
        """Accumulate gradients into `.grad`. `z_grad` (DGR's lambda * dP/dz) is added to the
        gradient reaching z after the method has combined the task gradients."""
        raise NotImplementedError

    def on_epoch_end(self, epoch: int, mean_losses: torch.Tensor) -> None:
        """Called with the unweighted epoch-mean training loss of each task."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class LossWeighting(Method):
    """A method that turns K losses into one scalar: one backward for everything, DGR's
    gradient at z included, so the encoder sees a single backward pass."""

    def combine(self, losses: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def backward(self, losses: torch.Tensor, z: torch.Tensor, z_grad: torch.Tensor | None, params: ParamGroups) -> None:
        loss = self.combine(losses)
        if z_grad is None:
            loss.backward()
        else:
            torch.autograd.backward([loss, z], [torch.ones_like(loss), z_grad])


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
