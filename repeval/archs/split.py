"""SPLIT (hard parameter sharing): the timm backbone is the encoder, unchanged; every parameter of
it is shared, and z, its output, is what every head reads (see `repeval.archs`)."""

from __future__ import annotations

from torch import nn

from repeval.backbones import build_encoder


def build_split(backbone: str, *, num_tasks: int, in_chans: int = 3, dense: bool = False,
                input_size: tuple[int, int] | None = None, pretrained_file=None) -> nn.Module:
    del num_tasks  # one encoder whatever the task count
    return build_encoder(backbone, in_chans, pretrained_file, dense=dense, input_size=input_size)
