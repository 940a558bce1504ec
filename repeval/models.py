"""Hard parameter sharing (the paper's SPLIT): a timm encoder, a head per task, and per task
`d` frozen, randomly initialised dummy heads of the same kind and architecture (DGR's psi^Delta).

Classification-only runs use a pooled encoder (z is `[B, D]`); runs with a dense task use the
encoder's last feature map at output stride 8 (z is `[B, C, h, w]`)."""

from __future__ import annotations

import copy
import difflib
import math
import os
from pathlib import Path

import timm
import torch
from torch import nn

from repeval.defaults import HEAD_HIDDEN
from repeval.errors import CheckpointError, DataNotFoundError, InvalidChoiceError
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


def _buffer_name(param_name: str) -> str:
    return "p_" + param_name.replace(".", "__")


# Format-1 checkpoints stored a classification task's dummies as w1, b1, w2, b2.
V1_DUMMY_KEYS = {"w1": "p_0__weight", "b1": "p_0__bias", "w2": "p_2__weight", "b2": "p_2__bias"}


def check_backbone(name: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise InvalidChoiceError(
            f"unknown backbone {name!r}; choose any timm model name (see timm.list_models()), "
            f"e.g. resnet50, resnet18, test_resnet.{hint}"
        )


def build_encoder(name: str, in_chans: int = 3, pretrained_file: str | os.PathLike | None = None,
                  dense: bool = False) -> nn.Module:
    """A timm model returning pooled features (`num_classes=0`), or with `dense` its last
    feature map at output stride 8 (`FeatureMapEncoder`). Weights come only from a local file:
    nothing is fetched from a hub."""
    check_backbone(name)
    if dense:
        return FeatureMapEncoder(name, in_chans, pretrained_file)
    kwargs: dict = dict(num_classes=0, in_chans=in_chans)
    if pretrained_file is not None:
        kwargs.update(_weights_kwargs(pretrained_file, name, timm.create_model(name, **kwargs)))
    return timm.create_model(name, **kwargs)


def _weights_kwargs(pretrained_file, name: str, model: nn.Module) -> dict:
    path = Path(pretrained_file).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"pretrained weights file {str(path)!r} does not exist")
    check_weights_file(path, name, model)
    return dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


class FeatureMapEncoder(nn.Module):
    """A timm backbone's last feature map (`features_only`) at output stride 8.

    timm's `output_stride=8` dilates the last two stages exactly as the reference's
    `ResnetDilated` (strides 1, dilations 2 and 4). timm ResNets zero-initialise each block's
    last BN (`zero_init_last`), torchvision's do not; the reference trains torchvision's from
    scratch, so it is turned off where the model takes it. A backbone that ignores
    `output_stride` is refused: its reduction is checked, not assumed."""

    output_stride = 8

    def __init__(self, name: str, in_chans: int = 3, pretrained_file: str | os.PathLike | None = None):
        super().__init__()
        kwargs: dict = dict(features_only=True, out_indices=(-1,), in_chans=in_chans, output_stride=self.output_stride)
        try:
            body = timm.create_model(name, zero_init_last=False, **kwargs)
        except TypeError:  # models without the option
            body = timm.create_model(name, **kwargs)
        if pretrained_file is not None:
            full = timm.create_model(name, num_classes=0, in_chans=in_chans)
            body = timm.create_model(name, **kwargs, **_weights_kwargs(pretrained_file, name, full))
        reduction = body.feature_info.reduction()[-1]
        if reduction != self.output_stride:
            raise InvalidChoiceError(
                f"backbone {name!r} gives feature maps at stride {reduction}, not {self.output_stride}: it does not "
                "support output_stride; dense tasks need one that does (e.g. resnet50, resnet18, test_resnet)"
            )
        self.body = body
        self.num_features = body.feature_info.channels()[-1]

    def map_side(self, height: int, width: int) -> int:
        """The shorter side of the feature map of an input of `height` x `width`."""
        return min(math.ceil(height / self.output_stride), math.ceil(width / self.output_stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[-1]


def check_weights_file(path: Path, name: str, model: nn.Module) -> None:
    """Refuse a weights file that timm could not load into `model` with a line naming the file,
    the backbone and the first key that differs (timm's own error is a page of size mismatches).
    The classifier is dropped and the first convolution adapted to `in_chans` by timm: their
    shapes may differ."""
    from timm.models import load_state_dict

    try:
        state = load_state_dict(str(path), weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line answer
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"pretrained weights file {str(path)!r} cannot be read as a state dict ({first})") from None
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    classifiers = cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    first_conv = cfg.get("first_conv") or ()
    first_conv = (first_conv,) if isinstance(first_conv, str) else tuple(first_conv)
    own = model.state_dict()
    for key, value in state.items():
        if any(key.startswith(c + ".") for c in classifiers) or key not in own:
            continue
        expected = tuple(own[key].shape)
        got = tuple(getattr(value, "shape", ()))
        if any(key == c + ".weight" for c in first_conv) and len(got) == len(expected) == 4:
            expected, got = expected[:1] + expected[2:], got[:1] + got[2:]
        if got != expected:
            raise CheckpointError(
                f"pretrained weights file {str(path)!r} does not fit backbone {name!r}: key {key!r} has shape "
                f"{list(got)}, the model needs {list(expected)}"
            )
    missing = [k for k in own if k not in state and not own[k].dtype == torch.int64]
    if missing:
        raise CheckpointError(
            f"pretrained weights file {str(path)!r} does not fit backbone {name!r}: it has no key {missing[0]!r} "
            f"({len(missing)} of the model's {len(own)} keys missing)"
        )


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

    def new_head(self, task: int) -> nn.Module:
        """A freshly initialised head for task `task`, like the model's own (PTA's decoders)."""
        return self.kinds[task].build_head(self.encoder.num_features, self.head_config, self.map_side)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def predict(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Raw outputs of every task head, in task order (dense ones at the feature map's size;
        `kinds[k].predict(output, size)` gives the prediction at the input's)."""
        return [self.heads[t.name](z) for t in self.tasks]

    def task_losses(self, outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> torch.Tensor:
        """Each task kind's loss of its head's output: `[K]`, float32."""
        return torch.stack([kind.loss(out, y) for kind, out, y in zip(self.kinds, outputs, targets)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.predict(self.encode(x))
