"""Every head module repeval builds: the two-layer MLP of classification tasks and the DeepLabv3
head of dense tasks. Task kinds (`repeval.kinds`) choose which one a task gets; model heads,
DGR's dummy heads, PTA's decoders and universality's heads all come from here, so they share
PyTorch's default initialisation and one definition."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from repeval.defaults import ASPP_WIDTH, HEAD_HIDDEN

REFERENCE_RATES = (12, 24, 36)  # DeepLabv3's ASPP rates at output stride 8 (Auto-lambda, DGR)


@dataclass(frozen=True)
class HeadConfig:
    """How heads are shaped; stored in checkpoints (format 2) so probes rebuild them exactly.

    `hidden` is the two-layer head's width; `width` and `rates` are the ASPP's channels and
    dilation rates (`rates=None`: `aspp_rates` of the feature map's size). `logit_relu` puts a
    ReLU on the two-layer head's outputs, as the authors' UTKFace heads (task and dummy) do:
    about half the logits are 0 at initialisation. Off by default (plain logits).
    """

    hidden: int = HEAD_HIDDEN
    width: int = ASPP_WIDTH
    rates: tuple[int, ...] | None = None
    logit_relu: bool = False

    def to_dict(self) -> dict:
        d = asdict(self)
        d["rates"] = None if self.rates is None else list(self.rates)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> HeadConfig:
        rates = d.get("rates")
        return cls(hidden=int(d.get("hidden", HEAD_HIDDEN)), width=int(d.get("width", ASPP_WIDTH)),
                   rates=None if rates is None else tuple(int(r) for r in rates),
                   logit_relu=bool(d.get("logit_relu", False)))


def aspp_rates(map_side: int) -> tuple[int, int, int]:
    """ASPP dilation rates for a feature map whose shorter side is `map_side`.

    The reference rates (12, 24, 36) are kept on maps of 32 rows or more (NYUv2's 36x48 and
    Cityscapes' 32x32 training maps, where the reference runs them). On smaller maps every
    off-centre tap of those rates reads zero padding and ASPP degenerates into 1x1 convolutions,
    so the rates shrink to (k, 2k, 3k), k = max(1, side // 8): the largest stays below half the map.

    >>> aspp_rates(36), aspp_rates(32), aspp_rates(8), aspp_rates(16)
    ((12, 24, 36), (12, 24, 36), (1, 2, 3), (2, 4, 6))
    """
    if map_side >= 32:
        return REFERENCE_RATES
    k = max(1, map_side // 8)
    return (k, 2 * k, 3 * k)


def mlp_head(in_features: int, hidden: int, outputs: int, logit_relu: bool = False) -> nn.Sequential:
    """Two fully connected layers (the authors' UTKFace predictor; with `logit_relu`, their
    ReLU on the logits too)."""
    layers = [nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, outputs)]
    return nn.Sequential(*layers, *([nn.ReLU()] if logit_relu else []))


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> list[nn.Module]:
    pad = dilation * (kernel // 2)
    return [nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]


class ASPPPooling(nn.Sequential):
    """The image-level branch: global average, 1x1 conv-BN-ReLU, broadcast back to the map."""

    def __init__(self, cin: int, cout: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as in the Auto-lambda/DGR network: five branches (1x1,
    three dilated 3x3, image pooling), concatenated and projected to `width`; no dropout."""

    def __init__(self, cin: int, width: int, rates: tuple[int, ...]):
        super().__init__()
        branches = [nn.Sequential(*_conv_bn_relu(cin, width, 1))]
        branches += [nn.Sequential(*_conv_bn_relu(cin, width, 3, r)) for r in rates]
        branches.append(ASPPPooling(cin, width))
        self.branches = nn.ModuleList(branches)
        self.project = nn.Sequential(*_conv_bn_relu(width * len(branches), width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.branches], dim=1))


def deeplab_head(in_channels: int, outputs: int, width: int, rates: tuple[int, ...]) -> nn.Sequential:
    """DeepLabv3's head: ASPP, 3x3 conv-BN-ReLU, 1x1 conv to `outputs` (with bias). Its output
    stays at the feature map's resolution; the task kind upsamples it to the input's."""
    return nn.Sequential(ASPP(in_channels, width, rates), *_conv_bn_relu(width, width, 3),
                         nn.Conv2d(width, outputs, 1))


def head_params(head: nn.Module) -> list[torch.Tensor]:
    """`[W1, b1, W2, b2]` of an `mlp_head` (`[W, b]` of a linear one), detached."""
    return [p.detach() for p in head.parameters()]


def head_logits(z: torch.Tensor, params) -> torch.Tensor:
    """Logits of a two-layer (`[W1, b1, W2, b2]`) or linear (`[W, b]`) head on `z` `[B, D]`: `[B, C]`.
    Parameters stacked along a leading dimension d give `[d, B, C]` (universality's many heads).

    >>> head = mlp_head(8, 4, 3)
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
