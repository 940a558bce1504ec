"""MTAN (Liu, Johns & Davison, CVPR 2019) on a timm backbone, as Auto-lambda's and DGR's
`MTANDeepLabv3` builds it on ResNet-50 (see `../shared/notes`, "MTAN"):

- every stage i of the backbone gives u_ib (all blocks but the last) and u_it (the last block);
- task t's attention at stage i: mask = sigmoid(BN(conv1x1(ReLU(BN(conv1x1(input)))))), with
  input u_1b at stage 1 and [u_ib, f_i(a_(i-1)^t)] (channels concatenated) after; a_i^t = mask * u_it;
- f_i, shared by the tasks, is a bottleneck with a 1x1 projection (timm's `Bottleneck`, the
  reference's torchvision one) from u_it's channels to u_(i+1)b's, max-pooled to u_(i+1)b's size
  where the stride grows (the reference's MaxPool2d(2) after stage 1);
- task t's head reads a_4^t. Attention widths: mid = channels(u_it) / 4 (stage 1: 256 -> 64 -> 256,
  stage i: 2 ch_i -> ch_i / 4 -> ch_i on ResNet-50, as the reference).

Where a stage has a single block (tiny test backbones), u_b is the stage's input, pooled to u_t's
size if that block strides. z is stacked `[K, B, C, h, w]` (dense) or pooled per task `[K, B, C]`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from timm.models.resnet import Bottleneck
from torch import nn

from repeval.archs.stages import StagedBackbone
from repeval.backbones import map_side

# The input a blank forward reads the channel sizes from when the size is not known (pooled encoders).
CHANNELS_INPUT = (64, 64)


def attention_layer(in_channels: int, out_channels: int) -> nn.Sequential:
    mid = max(1, out_channels // 4)
    return nn.Sequential(
        nn.Conv2d(in_channels, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
        nn.Conv2d(mid, out_channels, 1), nn.BatchNorm2d(out_channels), nn.Sigmoid(),
    )


def shared_block(in_channels: int, out_channels: int) -> nn.Module:
    if out_channels % Bottleneck.expansion:
        raise ValueError(f"MTAN's shared bottleneck needs output channels divisible by 4, got {out_channels}")
    projection = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))
    return Bottleneck(in_channels, out_channels // Bottleneck.expansion, downsample=projection)


def _fit(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return x if x.shape[-2:] == like.shape[-2:] else F.adaptive_max_pool2d(x, like.shape[-2:])


class MTANEncoder(nn.Module):
    per_task = True

    def __init__(self, backbone: StagedBackbone, num_tasks: int, in_chans: int = 3, dense: bool = True,
                 input_size: tuple[int, int] | None = None, shared: str = "blocks"):
        super().__init__()
        self.backbone = backbone
        self.dense = dense
        self.shared = shared
        self.output_stride = backbone.stride
        chans = backbone.channels(in_chans, tuple(input_size or CHANNELS_INPUT))
        self.blocks = nn.ModuleList(shared_block(chans[i][1], chans[i + 1][0]) for i in range(len(chans) - 1))
        self.attention = nn.ModuleList(
            nn.ModuleList(attention_layer(b if i == 0 else 2 * b, t) for i, (b, t) in enumerate(chans))
            for _ in range(num_tasks)
        )
        self.num_features = chans[-1][1]

    def map_side(self, height: int, width: int) -> int:
        return map_side(height, width, self.output_stride)

    def attend(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        per_task = []
        for attention in self.attention:
            a = None
            for i, (u_b, u_t) in enumerate(pairs):
                gate_input = u_b if a is None else torch.cat([u_b, _fit(self.blocks[i - 1](a), u_b)], dim=1)
                a = attention[i](_fit(gate_input, u_t)) * u_t
            per_task.append(a)
        z = torch.stack(per_task)
        return z if self.dense else z.mean(dim=(-2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attend(self.backbone(x))

    def probe_features(self, x: torch.Tensor) -> torch.Tensor:
        u4 = self.backbone(x)[-1][1]
        return u4 if self.dense else u4.mean(dim=(-2, -1))

    def shared_parameters(self) -> list[nn.Parameter]:
        extra = list(self.blocks.parameters()) if self.shared == "blocks" else []
        return [*self.backbone.parameters(), *extra]

    def task_parameters(self, task: int) -> list[nn.Parameter]:
        return list(self.attention[task].parameters())

    def common_parameters(self) -> list[nn.Parameter]:
        return list(self.blocks.parameters()) if self.shared == "backbone" else []

    def probe_view(self) -> nn.Module:
        return ProbeView(self)


class ProbeView(nn.Module):
    """The MTAN encoder seen by probes: its backbone's last-stage output."""

    def __init__(self, encoder: MTANEncoder):
        super().__init__()
        self.encoder = encoder
        self.num_features = encoder.num_features

    def map_side(self, height: int, width: int) -> int:
        return self.encoder.map_side(height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.probe_features(x)


def build_mtan(backbone: str, *, num_tasks: int, in_chans: int = 3, dense: bool = False,
               input_size: tuple[int, int] | None = None, pretrained_file=None, shared: str = "blocks") -> MTANEncoder:
    staged = StagedBackbone(backbone, in_chans, dense, input_size, pretrained_file)
    return MTANEncoder(staged, num_tasks, in_chans, dense, input_size, shared)
