"""Hard parameter sharing (the paper's SPLIT): a timm encoder, a head per task, and per task
`d` frozen, randomly initialised dummy heads of the same architecture (DGR's psi^Delta)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import nn

from repeval.defaults import HEAD_HIDDEN
from repeval.errors import CheckpointError, DataNotFoundError, InvalidChoiceError
from repeval.tasks import TaskSpec


def build_head(in_features: int, hidden: int, num_classes: int) -> nn.Sequential:
    """The task predictor: two fully connected layers. The one builder of a head: task heads,
    DGR's dummy heads and the universality measure's random heads are all drawn by it, so they
    share PyTorch's default initialisation."""
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


def head_params(head: nn.Module) -> list[torch.Tensor]:
    """`[W1, b1, W2, b2]` of a `build_head` head (`[W, b]` of a linear one), detached."""
    return [p.detach() for p in head.parameters()]


def head_logits(z: torch.Tensor, params) -> torch.Tensor:
    """Logits of a two-layer (`[W1, b1, W2, b2]`) or linear (`[W, b]`) head on `z` `[B, D]`: `[B, C]`.
    Parameters stacked along a leading dimension d (DGR's dummy heads) give `[d, B, C]`.

    >>> head = build_head(8, 4, 3)
    >>> z = torch.randn(5, 8)
    >>> torch.allclose(head_logits(z, head_params(head)), head(z))
    True
    >>> stacked = [torch.stack([p, p]) for p in head_params(head)]
    >>> head_logits(z, stacked).shape
    torch.Size([2, 5, 3])
    """
    if len(params) == 2:
        w, b = params
        return torch.matmul(z, w.transpose(-1, -2)) + b.unsqueeze(-2)
    w1, b1, w2, b2 = params
    h = F.relu(torch.matmul(z, w1.transpose(-1, -2)) + b1.unsqueeze(-2))
    return torch.matmul(h, w2.transpose(-1, -2)) + b2.unsqueeze(-2)


class DummyHeads(nn.Module):
    """`count` frozen heads drawn by `build_head` (PyTorch's default init).

    They are drawn from their own seed (the global RNG is untouched, so adding dummies changes
    nothing else in a run) and stored stacked as buffers: never parameters, so never in an
    optimiser, never updated, always saved. Stacked, a task's dummies run as batched matmuls.
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int, count: int, seed: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            heads = [head_params(build_head(in_features, hidden, num_classes)) for _ in range(count)]
        for name, values in zip(("w1", "b1", "w2", "b2"), zip(*heads)):
            self.register_buffer(name, torch.stack(values))

    @property
    def count(self) -> int:
        return self.w1.shape[0]

    def params(self) -> tuple[torch.Tensor, ...]:
        return self.w1, self.b1, self.w2, self.b2

    @staticmethod
    def apply(z: torch.Tensor, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Logits `[d, B, C]` of the stacked heads `params` on representations `z` `[B, D]`."""
        return head_logits(z, params)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.apply(z, self.params())


def check_backbone(name: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise InvalidChoiceError(
            f"unknown backbone {name!r}; choose any timm model name (see timm.list_models()), "
            f"e.g. resnet50, resnet18, test_resnet.{hint}"
        )


def build_encoder(name: str, in_chans: int = 3, pretrained_file: str | os.PathLike | None = None) -> nn.Module:
    """A timm model returning pooled features (`num_classes=0`). Weights come only from a
    local file: nothing is fetched from a hub."""
    check_backbone(name)
    kwargs: dict = dict(num_classes=0, in_chans=in_chans)
    if pretrained_file is not None:
        path = Path(pretrained_file).expanduser()
        if not path.is_file():
            raise DataNotFoundError(f"pretrained weights file {str(path)!r} does not exist")
        check_weights_file(path, name, timm.create_model(name, **kwargs))
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    return timm.create_model(name, **kwargs)


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
    """Shared encoder phi, task heads psi_k and (optionally) dummy heads psi^Delta_k."""

    def __init__(
        self,
        encoder: nn.Module,
        tasks: tuple[TaskSpec, ...],
        hidden: int = HEAD_HIDDEN,
        dummies: int = 0,
        dummy_seed: int = 0,
    ):
        super().__init__()
        self.encoder = encoder
        self.tasks = tuple(tasks)
        dim = encoder.num_features
        self.heads = nn.ModuleDict({t.name: build_head(dim, hidden, t.num_classes) for t in tasks})
        self.dummy_heads = nn.ModuleDict(
            {
                t.name: DummyHeads(dim, hidden, t.num_classes, dummies, seed=dummy_seed * 1009 + k)
                for k, t in enumerate(tasks)
            }
            if dummies > 0
            else {}
        )

    @property
    def num_features(self) -> int:
        return self.encoder.num_features

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def predict(self, z: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every task head, in task order."""
        return [self.heads[t.name](z) for t in self.tasks]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.predict(self.encode(x))
