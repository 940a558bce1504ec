"""What a step shows while training runs (`repeval train --tensorboard`, `metrics.jsonl`): each
task's loss and DGR penalty, DGR's pull against the task gradient at z, and the method's own
numbers (`Method.diagnostics`: task weights, PCGrad's projections).

DGR's pull, per task and in total:

    pull_k = ||lambda dP_k/dz|| / ||g_k||,        total = ||lambda sum_k dP_k/dz|| / ||sum_k g_k||

with g_k the gradient task k's loss sends back into z in the step's own backward (what the
method applies: dL_k/dz for EW and the gradient methods, the weighted term's for loss weightings;
with PTA, its model head's share). Above 1, DGR pulls z harder than the tasks do.

Nothing is recomputed: `StepWatch.tap` puts a view of each head's input between z and the head
and a tensor hook on it, so the method's backward hands over g_k; DGR's per-task gradients are
the regulariser's own. A watched step costs K small copies of z's gradient and a few norms; other
steps run untouched. Values stay on the device until the loop logs them."""

from __future__ import annotations

from functools import partial

import torch


class StepWatch:
    """Watches one training step. `tap` is called by the step's first forward pass (SAM's second
    pass and Auto-lambda's meta passes are not watched); `finish` turns what was captured into
    0-d tensors (`values`)."""

    def __init__(self, num_tasks: int):
        self.task_grads: list[torch.Tensor | None] = [None] * num_tasks
        self.tapped = False
        self.values: dict[str, torch.Tensor] = {}

    def tap(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.tapped or not torch.is_grad_enabled():
            return inputs
        self.tapped = True
        out = []
        for k, x in enumerate(inputs):
            view = x.view_as(x)
            view.register_hook(partial(self._capture, k))
            out.append(view)
        return out

    def _capture(self, task: int, grad: torch.Tensor) -> None:
        # A backward of another task's loss hands this view zeros (the losses are stacked), so
        # the last non-zero gradient wins (GradNorm's norm pass comes before its step's); the
        # choice is made on the device, without a sync.
        grad = grad.detach().float()
        previous = self.task_grads[task]
        self.task_grads[task] = grad.clone() if previous is None else torch.where(grad.abs().amax() > 0, grad, previous)

    def finish(self, losses: torch.Tensor, penalties: torch.Tensor | None, dgr_grads: torch.Tensor | None,
               per_task_z: bool) -> None:
        names = range(len(self.task_grads))
        self.values = {f"loss/{k}": losses[k].detach().float() for k in names}
        if penalties is None or dgr_grads is None:
            return
        self.values.update({f"dgr_penalty/{k}": penalties[k].float() for k in names})
        captured = [g for g in self.task_grads if g is not None]
        if not captured:
            return
        dgr = dgr_grads.float()
        for k, g in enumerate(self.task_grads):
            if g is not None:
                own = dgr[k, k] if per_task_z else dgr[k]
                self.values[f"dgr_pull/{k}"] = _ratio(torch.linalg.vector_norm(own), torch.linalg.vector_norm(g))
        # MTAN's task slots are disjoint: the norm of the sum is the root of the summed squares.
        task_total = (torch.stack([torch.linalg.vector_norm(g) ** 2 for g in captured]).sum().sqrt() if per_task_z
                      else torch.linalg.vector_norm(torch.stack(captured).sum(0)))
        self.values["dgr_pull/total"] = _ratio(torch.linalg.vector_norm(dgr.sum(0)), task_total)


def _ratio(dgr: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
    """dgr / task, NaN where the task gradient is 0 (a task without targets: no pull defined)."""
    return torch.where(task > 0, dgr / task.clamp_min(torch.finfo(task.dtype).tiny), torch.nan)


def method_values(diagnostics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`Method.diagnostics()` as flat scalar names: a [K] tensor `weights` becomes
    `method/weights/0`, ... and a 0-d one `method/projections`."""
    out = {}
    for name, value in diagnostics.items():
        value = torch.as_tensor(value).detach()
        if value.dim() == 0:
            out[f"method/{name}"] = value.float()
        else:
            out.update({f"method/{name}/{k}": v.float() for k, v in enumerate(value)})
    return out


def named(values: dict[str, float], task_names: list[str]) -> dict[str, float]:
    """Task indices in the keys replaced by task names (`dgr_pull/0` -> `dgr_pull/seg`)."""
    out = {}
    for key, value in values.items():
        head, _, last = key.rpartition("/")
        out[f"{head}/{task_names[int(last)]}" if last.isdigit() else key] = value
    return out
