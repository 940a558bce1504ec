"""Pseudo-task augmentation (Meyerson & Miikkulainen, ICML 2018): D decoders per task on the
shared encoder, all trained, around a base method (`base`, default `ew`; the paper's Figure 2
also puts PTA on Auto-lambda, CAGrad and Nash-MTL). The original's decoder-control schemes
(freezing, re-initialising, perturbing decoders) are not fully specified, so repeval uses the
plain variant:

- D = 4 decoders per task: the model's head plus 3 extra, the same count as DGR's dummy heads,
  so the comparison with DGR is trained versus fixed random decoders;
- extra decoders share the head architecture, are initialised independently (PyTorch default,
  drawn after the model) and are never frozen or re-initialised;
- task k's loss is the mean over its D decoders (the sum-of-tasks scale is kept), and the base
  method combines these K losses (the extra decoders count as part of task k's head);
- evaluation and checkpoints use the model's head; the extra decoders live in the method's
  state (saved for --resume) and train with the model's optimiser.
With DGR, its gradient is added after the base's combination, or with order "before" it sits in
the model head's loss and is averaged with the decoders."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from repeval.errors import check_number
from repeval.training.methods.base import Pass, StepContext, WrapsMethod


class PTA(WrapsMethod):
    def __init__(self, num_tasks: int, decoders: int = 4, base: str = "ew"):
        super().__init__(num_tasks, base=base)
        check_number("PTA", "decoders", decoders, kind=int, low=1)
        self.decoders = decoders
        self.extra = nn.ModuleList()

    def attach(self, model: nn.Module) -> None:
        super().attach(model)
        device = next(model.parameters()).device
        self.extra = nn.ModuleList(
            nn.ModuleList(model.new_head(k) for _ in range(self.decoders - 1))
            for k in range(len(model.tasks))
        ).to(device)

    def parameters(self) -> list[torch.Tensor]:
        return [*super().parameters(), *self.extra.parameters()]

    def to(self, device: torch.device) -> PTA:
        super().to(device)
        self.extra.to(device)
        return self

    def step(self, ctx: StepContext) -> Pass:
        self.prepare(ctx)
        out = ctx.forward(ctx.batch)
        z = out.z.float()
        kinds = ctx.model.kinds
        task_losses = torch.stack([
            (out.losses[k] + sum(kinds[k].loss(decoder(ctx.model.task_input(z, k)), y) for decoder in decoders)) / self.decoders
            for k, (decoders, y) in enumerate(zip(self.extra, ctx.batch.ys))
        ])
        heads = [[*head, *decoders.parameters()] for head, decoders in zip(ctx.params.heads, self.extra)]
        ctx.optimizer.zero_grad(set_to_none=True)
        self.base.backward(task_losses, out.z, out.z_grad, replace(ctx.params, heads=heads), out.present)
        ctx.optimizer.step()
        return out

    def state_dict(self) -> dict:
        return {**super().state_dict(), "decoders": self.extra.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.extra.load_state_dict(state["decoders"])
