"""What an epoch of training adds up, step by step without a host sync: each task's loss over
the batches where it had targets, DGR's penalties over the same batches, the batches where it
had none, the first step whose loss was not finite, and the means of the watched steps'
diagnostics (DGR's pull, the method's weights: `repeval.training.diagnostics`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from repeval.distributed import sum_, world_size
from repeval.training.diagnostics import named


@dataclass
class EpochStats:
    """One epoch's totals, summed over ranks. `losses`/`penalties` [K]: means over the images of
    the batches where the task had targets (NaN for a task that had none all epoch);
    `empty_batches` [K]: the batches where it had none."""

    losses: torch.Tensor
    penalties: torch.Tensor | None
    empty_batches: list[int]
    steps: int
    seen: int
    watched: dict[str, float] = field(default_factory=dict)  # diagnostics' means over the watched steps

    def record(self, names: list[str]) -> dict:
        """This epoch's fields of `metrics.jsonl` (a NaN mean is written as null). Diagnostics:
        `dgr_pull` {task: mean, "total": mean} and `method` {name: {task: mean} or mean}."""
        out = {"train_loss": dict(zip(names, _finite_or_none(self.losses)))}
        if self.penalties is not None:
            out["dgr_penalty"] = dict(zip(names, _finite_or_none(self.penalties)))
        if any(self.empty_batches):  # the train losses above leave these batches out
            out["batches_without_targets"] = dict(zip(names, self.empty_batches))
        for key, value in named(self.watched, names).items():
            group, _, rest = key.partition("/")
            if group == "dgr_pull":
                out.setdefault("dgr_pull", {})[rest] = value if math.isfinite(value) else None
            elif group == "method":
                name, _, task = rest.partition("/")
                method = out.setdefault("method", {})
                if task:
                    method.setdefault(name, {})[task] = value
                else:
                    method[name] = value
        return out


def _finite_or_none(values: torch.Tensor) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values.tolist()]


class EpochAccumulator:
    def __init__(self, num_tasks: int, device: torch.device, with_penalties: bool):
        self.with_penalties = with_penalties
        # rows: loss sums, penalty sums, images counted, batches without targets
        self.sums = torch.zeros(4, num_tasks, device=device, dtype=torch.float64)
        self.first_bad_step = torch.tensor(-1, device=device)
        self.steps = self.seen = 0
        self.watched: dict[str, torch.Tensor] = {}  # name -> [sum, count] of its finite values

    def add_watched(self, values: dict[str, torch.Tensor]) -> None:
        """A watched step's diagnostics (0-d tensors, any device; no sync). NaN values (a pull
        without a task gradient) are left out of the means."""
        for key, value in values.items():
            if key.startswith(("dgr_pull/", "method/")):
                value = value.detach().to(self.sums.device, torch.float64)
                finite = torch.isfinite(value)
                entry = torch.stack([torch.where(finite, value, 0), finite.to(torch.float64)])
                self.watched[key] = self.watched[key] + entry if key in self.watched else entry

    def add(self, losses: torch.Tensor, penalties: torch.Tensor | None, present: torch.Tensor, images: int) -> None:
        counted = present.to(torch.float64) * images
        finite = torch.isfinite(losses).all()
        self.sums[0] += torch.where(present, losses.double(), 0) * images
        if penalties is not None:
            self.sums[1] += torch.where(present, penalties.double(), 0) * images
            finite &= torch.isfinite(penalties).all()
        self.sums[2] += counted
        self.sums[3] += (~present).to(torch.float64)
        self.first_bad_step = torch.where(~finite & (self.first_bad_step < 0), self.steps, self.first_bad_step)
        self.steps, self.seen = self.steps + 1, self.seen + images

    def running_loss(self) -> float:
        """The mean summed loss so far (a host sync: for the progress bar at logging steps)."""
        return float((self.sums[0] / self.sums[2].clamp_min(1)).sum())

    def totals(self) -> EpochStats:
        sums = sum_(torch.cat([self.sums.flatten(), torch.tensor([float(self.seen)], device=self.sums.device,
                                                                   dtype=torch.float64)]))  # over ranks
        k = self.sums.shape[1]
        table, seen = sums[:-1].view(4, k), int(sums[-1].item()) if world_size() > 1 else self.seen
        counted = table[2]
        penalties = (table[1] / counted).float() if self.with_penalties else None
        # Rank 0's watched steps stand for the epoch (each rank watches the same steps).
        watched = {k: float(s / n) if n > 0 else math.nan for k, (s, n) in self.watched.items()}
        return EpochStats((table[0] / counted).float(), penalties, [int(v) for v in table[3].tolist()], self.steps, seen,
                          watched)
