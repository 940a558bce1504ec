"""Single-task training: the model trains on one task only (the Delta_MTL baseline). A
single-task "model per task" is K runs of this method, one per `task`; `repeval sweep` expands
`single` into them. Other heads stay at their initialisation and DGR penalises only `task`."""

from __future__ import annotations

import torch
from torch import nn

from repeval.errors import InvalidChoiceError
from repeval.training.methods.base import LossWeighting


class SingleTask(LossWeighting):
    def __init__(self, num_tasks: int, task: str | None = None):
        super().__init__(num_tasks)
        self.task = task
        self.index: int | None = None

    def attach(self, model: nn.Module) -> None:
        names = [t.name for t in model.tasks]
        if self.task is None and len(names) == 1:  # a one-task dataset: that task
            self.task = names[0]
        if self.task not in names:
            raise InvalidChoiceError(
                f"The 'task' option of method 'single' must be one of {', '.join(names)}. Got {self.task!r} instead "
                "(repeval train --method single --task NAME)."
            )
        self.index = names.index(self.task)

    @property
    def trained_tasks(self) -> tuple[int, ...]:
        if self.index is None:
            raise RuntimeError("SingleTask.attach(model) must run first")
        return (self.index,)

    def combine(self, losses: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return losses[self.trained_tasks[0]]
