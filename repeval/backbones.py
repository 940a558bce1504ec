"""timm backbones as repeval's encoders: a pooled feature vector, or the last feature map of a
dense encoder. One place knows each backbone family's quirks:

- ResNets take `output_stride=8` (timm dilates stages 3-4 as the reference's `ResnetDilated`)
  and `zero_init_last` (off: torchvision, which the reference trains from scratch, does not
  zero-initialise a block's last BN);
- Swin takes neither `output_stride` (its constructor refuses it) nor inputs other than its
  `img_size` unless `strict_img_size=False`, and returns channels-last (NHWC) maps.

`create_timm` passes each such option only to models whose constructor accepts it, and says which
it dropped; the encoder then reads the real stride from `feature_info.reduction()` and the layout
from `output_fmt`, so neither is assumed."""

from __future__ import annotations

import difflib
import logging
import math
import os
from pathlib import Path

import timm
import torch
from torch import nn

from repeval.errors import CheckpointError, DataNotFoundError, InvalidChoiceError

__all__ = ["FeatureMapEncoder", "build_encoder", "check_backbone", "check_weights_file", "create_timm", "to_nchw"]

log = logging.getLogger("repeval")

# The dense encoders' output stride where the backbone can dilate (the reference's); others keep theirs.
OUTPUT_STRIDE = 8


def check_backbone(name: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        raise InvalidChoiceError(
            f"unknown backbone {name!r}; choose any timm model name (see timm.list_models()), "
            f"e.g. resnet50, resnet18, test_resnet.{hint}"
        )



def _weights_kwargs(pretrained_file, name: str, model: nn.Module) -> dict:
    path = Path(pretrained_file).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"pretrained weights file {str(path)!r} does not exist")
    check_weights_file(path, name, model)
    return dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))


def size_options(input_size: tuple[int, int] | None) -> dict:
    """Options for models built for one input size (Swin): built for `input_size`, and still
    accepting others (test images larger than training crops)."""
    return {} if input_size is None else dict(img_size=tuple(input_size), strict_img_size=False)


def create_timm(name: str, optional: dict | None = None, pretrained_file=None, **kwargs) -> tuple[nn.Module, set[str]]:
    """`timm.create_model(name, **kwargs, **optional)`, leaving out each `optional` option the
    model's constructor refuses. Returns the model and the names left out. Weights come only
    from a local file (`pretrained_file`)."""
    optional = dict(optional or {})
    dropped: set[str] = set()
    while True:
        try:
            model = timm.create_model(name, **kwargs, **optional)
            break
        except TypeError as e:
            refused = next((k for k in optional if f"'{k}'" in str(e)), None)
            if refused is None:
                raise
            dropped.add(refused)
            del optional[refused]
    if pretrained_file is not None:
        full = timm.create_model(name, num_classes=0, in_chans=kwargs.get("in_chans", 3),
                                 **{k: v for k, v in optional.items() if k not in ("output_stride",)})
        model = timm.create_model(name, **kwargs, **optional, **_weights_kwargs(pretrained_file, name, full))
    return model, dropped


def to_nchw(x: torch.Tensor, nhwc: bool) -> torch.Tensor:
    """NHWC -> NCHW. On CUDA the permuted view is kept (channels-last strides are what its convs
    want); on CPU it is made contiguous (weight gradients of channels-last inputs are slow there)."""
    if not nhwc:
        return x
    x = x.permute(0, 3, 1, 2)
    return x if x.is_cuda else x.contiguous()


def map_side(height: int, width: int, stride: int) -> int:
    """The shorter side of the feature map at `stride` of an input of `height` x `width`."""
    return min(math.ceil(height / stride), math.ceil(width / stride))


def build_encoder(name: str, in_chans: int = 3, pretrained_file: str | os.PathLike | None = None,
                  dense: bool = False, input_size: tuple[int, int] | None = None) -> nn.Module:
    """A timm model returning pooled features (`num_classes=0`), or with `dense` its last
    feature map (`FeatureMapEncoder`). `input_size` (height, width) is given to models built
    for one size (Swin)."""
    check_backbone(name)
    if dense:
        return FeatureMapEncoder(name, in_chans, pretrained_file, input_size)
    model, _ = create_timm(name, size_options(input_size), pretrained_file, num_classes=0, in_chans=in_chans)
    return model


class FeatureMapEncoder(nn.Module):
    """A timm backbone's last feature map (`features_only`), NCHW, at output stride 8 where the
    backbone can dilate, else at its own stride (Swin: 32), which is then recorded in
    `output_stride` and logged: the heads upsample to the input either way. A backbone that
    accepted `output_stride` but ignored it is refused (its reduction is checked, not assumed)."""

    def __init__(self, name: str, in_chans: int = 3, pretrained_file: str | os.PathLike | None = None,
                 input_size: tuple[int, int] | None = None):
        super().__init__()
        optional = dict(zero_init_last=False, output_stride=OUTPUT_STRIDE, **size_options(input_size))
        body, dropped = create_timm(name, optional, pretrained_file, features_only=True, out_indices=(-1,), in_chans=in_chans)
        reduction = body.feature_info.reduction()[-1]
        if "output_stride" in dropped:
            log.info("backbone %s has no output_stride option: its feature maps are at stride %d", name, reduction)
        elif reduction != OUTPUT_STRIDE:
            raise InvalidChoiceError(
                f"backbone {name!r} gives feature maps at stride {reduction}, not {OUTPUT_STRIDE}: it ignores output_stride; "
                "dense tasks need one that honours it (e.g. resnet50, resnet18, test_resnet) or has no such option (swin_*)"
            )
        self.body = body
        self.output_stride = reduction
        self.nhwc = str(getattr(body, "output_fmt", "NCHW")).endswith("NHWC")
        self.num_features = body.feature_info.channels()[-1]

    def map_side(self, height: int, width: int) -> int:
        return map_side(height, width, self.output_stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return to_nchw(self.body(x)[-1], self.nhwc)


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
