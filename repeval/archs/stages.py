"""A timm backbone as a stem and stages, each stage split into all its blocks but the last (output
u_b) and its last block (output u_t): MTAN's attention reads u_b and gates u_t. timm's
`features_only` wrapper hides the blocks, so the split is made here, per backbone family:

- ResNet (`conv1`, `bn1`, `act1`, `maxpool`, `layer1..4`): u_b = layerN[:-1], u_t = layerN[-1];
- Swin (`patch_embed`, `layers[i]` = downsample + blocks, channels-last): u_b = blocks[:-1] after
  the stage's downsampling, u_t = blocks[-1]; both are returned NCHW.

The backbone itself never sees the attention: it runs exactly as timm's forward_features."""

from __future__ import annotations

import torch
from torch import nn

from repeval.backbones import OUTPUT_STRIDE, check_backbone, create_timm, size_options, to_nchw
from repeval.errors import InvalidChoiceError

FAMILIES = ("resnet", "swin")


def backbone_family(model: nn.Module) -> str | None:
    if all(hasattr(model, a) for a in ("conv1", "bn1", "act1", "maxpool", "layer1", "layer4")):
        return "resnet"
    if hasattr(model, "patch_embed") and hasattr(model, "layers") and str(getattr(model, "output_fmt", "")).endswith("NHWC"):
        return "swin"
    return None


class StagedBackbone(nn.Module):
    """`forward(x)` returns [(u_b, u_t)] per stage, NCHW. `stride` is the last stage's."""

    def __init__(self, name: str, in_chans: int = 3, dense: bool = False, input_size: tuple[int, int] | None = None,
                 pretrained_file=None):
        super().__init__()
        check_backbone(name)
        optional = dict(zero_init_last=False, **size_options(input_size))
        if dense:
            optional["output_stride"] = OUTPUT_STRIDE  # refused by Swin, which keeps its stride 32
        model, _ = create_timm(name, optional, pretrained_file, num_classes=0, in_chans=in_chans)
        self.family = backbone_family(model)
        if self.family is None:
            raise InvalidChoiceError(
                f"arch 'mtan' needs the stages of a ResNet-family or Swin backbone (resnet50, resnet18, test_resnet, "
                f"swin_tiny_patch4_window7_224, ...); {name!r} is neither"
            )
        self.nhwc = self.family == "swin"
        if self.family == "resnet":
            self.stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
            stages = [model.layer1, model.layer2, model.layer3, model.layer4]
            self.stages = nn.ModuleList(nn.ModuleList([s[:-1], s[-1]]) for s in stages)
        else:
            self.stem = model.patch_embed
            self.stages = nn.ModuleList(nn.ModuleList([nn.Sequential(s.downsample, *s.blocks[:-1]), s.blocks[-1]])
                                        for s in model.layers)
        self.stride = int(model.feature_info[-1]["reduction"])

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        x = self.stem(x)
        pairs = []
        for body, last in self.stages:
            u_b = body(x)
            x = last(u_b)
            pairs.append((to_nchw(u_b, self.nhwc), to_nchw(x, self.nhwc)))
        return pairs

    @torch.no_grad()
    def channels(self, in_chans: int, size: tuple[int, int]) -> list[tuple[int, int]]:
        """(channels of u_b, channels of u_t) per stage, from one forward of a blank image."""
        was_training = self.training
        self.eval()
        pairs = self(torch.zeros(1, in_chans, *size))
        self.train(was_training)
        return [(b.shape[1], t.shape[1]) for b, t in pairs]
