"""A multi-task model: an architecture's encoder (`repeval.archs`: SPLIT's shared timm backbone,
or MTAN), a head per task, and per task `d` frozen, randomly initialised dummy heads of the same
kind and architecture (DGR's psi^Delta).

Classification-only runs use a pooled encoder (z is `[B, D]`); runs with a dense task use the
encoder's last feature map (z is `[B, C, h, w]`). MTAN's z is stacked per task (`[K, ...]`):
head k and task k's dummies read `task_input(z, k)`."""

from __future__ import annotations

import copy

import torch
from torch import nn

from repeval.backbones import FeatureMapEncoder, build_encoder, check_backbone, check_weights_file  # noqa: F401 - re-exported
from repeval.defaults import HEAD_HIDDEN
from repeval.heads import HeadConfig, head_logits, head_params  # noqa: F401 - re-exported
from repeval.kinds import kind_of
from repeval.kinds.base import TaskKind
from repeval.tasks import TaskSpec

__all__ = ["MultiTaskModel", "DummyHeads", "FeatureMapEncoder", "build_encoder", "head_logits", "head_params",
           "check_backbone", "check_weights_file", "HeadConfig"]


class DummyHeads(nn.Module):
    """`count` frozen heads of one task, drawn by the task kind's head builder (PyTorch's
    default init), for any head module.

    They are drawn from their own seed (the global RNG is untouched, so adding dummies changes
    nothing else in a run) and kept stacked (`torch.func.stack_module_state`) as buffers: never
    parameters, so never in an optimiser, never updated, always saved. `losses` runs all of them
    at once with `vmap(functional_call)`. Their batch norms use batch statistics and keep no
    running statistics (the reference code runs its dummy heads in training mode).

    >>> from repeval.kinds import kind_of
    >>> depth = kind_of(TaskSpec("depth", 1, kind="depth"))
    >>> heads = DummyHeads(depth, 8, HeadConfig(width=4), count=3, seed=0, map_side=4)
    >>> heads.outputs(torch.randn(2, 8, 4, 4)).shape  # d, B, channels, h, w
    torch.Size([3, 2, 1, 4, 4])
    >>> heads.losses(torch.randn(2, 8, 4, 4), torch.rand(2, 1, 16, 16)).shape
    torch.Size([3])
    """

    def __init__(self, kind: TaskKind, in_channels: int, config: HeadConfig, count: int, seed: int,
                 map_side: int | None = None):
        super().__init__()
        self.kind = kind
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            heads = [kind.build_head(in_channels, config, map_side) for _ in range(count)]
        for h in heads:
            torch.func.replace_all_batch_norm_modules_(h)
        params, _ = torch.func.stack_module_state(heads)
        self.names = list(params)
        for name, value in params.items():
            self.register_buffer(_buffer_name(name), value.detach().clone())
        # The architecture without weights; functional_call supplies them. Not a submodule.
        self.__dict__["_base"] = copy.deepcopy(heads[0]).to("meta")

    @property
    def count(self) -> int:
        return self.params()[0].shape[0]

    def params(self) -> tuple[torch.Tensor, ...]:
        return tuple(getattr(self, _buffer_name(n)) for n in self.names)

    def _head(self, z: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self._base, dict(zip(self.names, params)), (z,))

    def outputs(self, z: torch.Tensor, params: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """Raw outputs `[d, B, ...]` of the stacked heads `params` (default: their own) on `z`."""
        return torch.func.vmap(lambda *p: self._head(z, *p))(*(self.params() if params is None else params))

    def losses(self, z: torch.Tensor, target: torch.Tensor, params: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """The task kind's batch loss of each dummy head: `[d]`."""
        return torch.func.vmap(lambda *p: self.kind.loss(self._head(z, *p), target))(
            *(self.params() if params is None else params))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.outputs(z)


def to_channels_last(module: nn.Module) -> nn.Module:
    """`module` with its 4-D parameters and buffers in channels-last memory format, in place.
    `module.to(memory_format=torch.channels_last)` refuses modules holding tensors of another
    rank, as the dummy heads' stacked `[d, out, in, kh, kw]` convolution weights are."""
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.dim() == 4:
                tensor.data = tensor.data.contiguous(memory_format=torch.channels_last)
    return module


def _buffer_name(param_name: str) -> str:
    return "p_" + param_name.replace(".", "__")


# Format-1 checkpoints stored a classification task's dummies as w1, b1, w2, b2.
V1_DUMMY_KEYS = {"w1": "p_0__weight", "b1": "p_0__bias", "w2": "p_2__weight", "b2": "p_2__bias"}


class MultiTaskModel(nn.Module):
    """Shared encoder phi, task heads psi_k and (optionally) dummy heads psi^Delta_k, each head
    built by its task's kind. `map_side` is the feature map's shorter side for dense encoders
    (it sets the ASPP rates); None for pooled ones."""

    def __init__(
        self,
        encoder: nn.Module,
        tasks: tuple[TaskSpec, ...],
        hidden: int = HEAD_HIDDEN,
        dummies: int = 0,
        dummy_seed: int = 0,
        head_config: HeadConfig | None = None,
        map_side: int | None = None,
    ):
        super().__init__()
        self.encoder = encoder
        self.tasks = tuple(tasks)
        self.kinds = [kind_of(t) for t in self.tasks]
        self.head_config = head_config or HeadConfig(hidden=hidden)
        self.map_side = map_side
        dim = encoder.num_features
        self.heads = nn.ModuleDict({t.name: self.new_head(k) for k, t in enumerate(self.tasks)})
        self.dummy_heads = nn.ModuleDict(
            {
                t.name: DummyHeads(kind, dim, self.head_config, dummies, seed=dummy_seed * 1009 + k, map_side=map_side)
                for k, (t, kind) in enumerate(zip(self.tasks, self.kinds))
            }
            if dummies > 0
            else {}
        )

    @property
    def num_features(self) -> int:
        return self.encoder.num_features

    @property
    def per_task(self) -> bool:
        """Whether z holds one representation per task (MTAN), stacked on dim 0."""
        return bool(getattr(self.encoder, "per_task", False))

    def task_input(self, z: torch.Tensor, task: int) -> torch.Tensor:
        """What task `task`'s head (and its dummies) read of z."""
        return z[task] if self.per_task else z

    def shared_parameters(self) -> list[nn.Parameter]:
        """The parameters gradient methods combine over (the architecture's shared set)."""
        own = getattr(self.encoder, "shared_parameters", None)
        return list(own()) if own else list(self.encoder.parameters())

    def task_parameters(self, task: int) -> list[nn.Parameter]:
        """Parameters only task `task`'s loss reaches: its head, and MTAN's attention for it."""
        own = getattr(self.encoder, "task_parameters", None)
        return [*self.heads[self.tasks[task].name].parameters(), *(own(task) if own else [])]

    def common_parameters(self) -> list[nn.Parameter]:
        """Encoder parameters outside the shared set that every task reaches (MTAN's shared
        attention blocks with `shared=backbone`): they get the plain sum of task gradients."""
        own = getattr(self.encoder, "common_parameters", None)
        return list(own()) if own else []

    def probe_encoder(self) -> nn.Module:
        """The module whose output probes and universality measure (see `repeval.archs`)."""
        view = getattr(self.encoder, "probe_view", None)
        return view() if view else self.encoder

    def new_head(self, task: int) -> nn.Module:
        """A freshly initialised head for task `task`, like the model's own (PTA's decoders)."""
        return self.kinds[task].build_head(self.encoder.num_features, self.head_config, self.map_side)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def predict(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Raw outputs of every task head, in task order (dense ones at the feature map's size;
        `kinds[k].predict(output, size)` gives the prediction at the input's)."""
        return self.heads_on(self.head_inputs(z))

    def head_inputs(self, z: torch.Tensor) -> list[torch.Tensor]:
        """What each task head reads of z, in task order."""
        return [self.task_input(z, k) for k in range(len(self.tasks))]

    def heads_on(self, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Raw outputs of every task head on its input (`head_inputs`, possibly watched)."""
        return [self.heads[t.name](x) for t, x in zip(self.tasks, inputs)]

    def task_losses(self, outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        """Each task kind's loss of its head's output: `[K]`, float32."""
        return torch.stack([kind.loss(out, y) for kind, out, y in zip(self.kinds, outputs, targets)])

    def task_present(self, targets: list[torch.Tensor]) -> torch.Tensor:
        """`[K]` bool: which tasks have a valid target in the batch (an absent task's loss is 0)."""
        return torch.stack([kind.present(y) for kind, y in zip(self.kinds, targets)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.predict(self.encode(x))
