"""Dense multi-task datasets: images with one target map per task, and the Auto-lambda/DGR
joint augmentation (random scale and crop, horizontal flip) applied to all of them at once.

Samples come from a `source` (`load(i)` -> uint8 CHW image, per-task target arrays): real
datasets read their files per sample; small ones hold arrays in memory. Each target map is
`[H, W]` (int64, segmentation) or `[C, H, W]` (float32). What scaling and flipping does to a
target (depth / scale, disparity * scale, the normals' x negated) is the task kind's business
(`TaskKind.scale_target`, `TaskKind.flip_target`)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from repeval.errors import DataError
from repeval.kinds import kind_of
from repeval.tasks import TaskSpec


@dataclass(frozen=True)
class Augmentation:
    """Auto-lambda/DGR's `DataTransform`: scale the sample by one of `scales` (image bilinear,
    targets nearest), take one random `crop` (padding with the targets' invalid values when the
    scaled sample is smaller), flip with probability 1/2.

    NYUv2: scales (1.0, 1.2, 1.5), crop the image size. Cityscapes: scale 1.0, square crops of the
    image's height (256x256 of 256x512). `crop` may be left as `None` ("image") or "square" until
    the image size is known (`for_size`)."""

    scales: tuple[float, ...]
    crop: tuple[int, int] | str | None = None

    def for_size(self, height: int, width: int) -> Augmentation:
        """This augmentation with its crop in pixels, for images of `height` x `width`."""
        if self.crop is None:
            return Augmentation(self.scales, (height, width))
        if self.crop == "square":
            return Augmentation(self.scales, (height, height))
        return self


class ArraySource:
    """Samples held in memory: uint8 `[N, C, H, W]` images and per-task target arrays."""

    def __init__(self, images: np.ndarray, targets: Sequence[np.ndarray]):
        self.images, self.targets = images, list(targets)

    def __len__(self) -> int:
        return len(self.images)

    def load(self, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        return self.images[i], [t[i] for t in self.targets]


class DenseDataset(torch.utils.data.Dataset):
    """A split of a dense dataset. Items are `(uint8 [C, H, W], [target per task])`;
    `__getitems__` returns a whole batch, stacked (see `repeval.datasets.collate_batch`).

    Every sample read is checked (`load`): the image is uint8 of sample 0's shape, each target
    has its kind's shape at the image's size and values its kind accepts. A sample that does
    not fit raises a `DataError` naming its file (a source's `files(i)`: the image's, then each
    task's). Sample 0 is read at construction, so a broken layout is refused before training."""

    def __init__(self, source, tasks: tuple[TaskSpec, ...], augmentation: Augmentation | None = None):
        self.source = source
        self.tasks = tuple(tasks)
        self.kinds = [kind_of(t) for t in tasks]
        self.augmentation = augmentation
        self.indices = np.arange(len(source))
        self.extras: dict = {}
        self.keep: list[int] | None = None  # the tasks whose targets are returned (None: all)
        self.sample_shape: tuple[int, ...] | None = None
        self.sample_shape = tuple(self.load(0)[0].shape)

    def where(self, i: int, part: int = 0) -> str:
        """The file behind part `part` of sample `i` (0: the image, k + 1: task k's target)."""
        files = getattr(self.source, "files", None)
        return repr(str(files(i)[part])) if files is not None else f"sample {i}"

    def load(self, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Sample `i` as its source reads it, checked against the split's layout."""
        image, targets = self.source.load(i)
        if image.dtype != np.uint8 or image.ndim != 3 or (self.sample_shape not in (None, image.shape)):
            expected = "[C, H, W]" if self.sample_shape is None else f"{list(self.sample_shape)} (sample 0's)"
            raise DataError(f"{self.where(i)}: image of {image.dtype} {list(image.shape)}; expected uint8 {expected}")
        height, width = image.shape[1:]
        for k, (task, kind, target) in enumerate(zip(self.tasks, self.kinds, targets)):
            expected = (height, width) if kind.target_is_index else (kind.outputs, height, width)
            if tuple(target.shape) != expected:
                raise DataError(f"{self.where(i, k + 1)}: the {task.name} target has shape {list(target.shape)}; "
                                f"expected {list(expected)} at the image's size")
            problem = kind.target_problem(target)
            if problem:
                raise DataError(f"{self.where(i, k + 1)}: the {task.name} target has {problem}")
        return image, targets

    def select_tasks(self, keep: list[int]) -> DenseDataset:
        """The same split returning only the targets of tasks `keep` (augmented as before)."""
        out = copy.copy(self)
        out.keep = [k if self.keep is None else self.keep[k] for k in keep]
        return out

    def __len__(self) -> int:
        return len(self.source)

    @property
    def image_shape(self) -> tuple[int, ...]:
        if self.augmentation is not None:
            return (self.sample_shape[0], *self.augmentation.crop)
        return self.sample_shape

    def __getitem__(self, i: int):
        image, targets = self.load(int(i))
        image = torch.from_numpy(np.ascontiguousarray(image))
        targets = [torch.from_numpy(np.ascontiguousarray(t)) for t in targets]
        if self.augmentation is not None:
            image, targets = augment(image, targets, self.kinds, self.augmentation)
        return image, targets if self.keep is None else [targets[k] for k in self.keep]

    def __getitems__(self, idx: list[int]):
        items = [self[i] for i in idx]
        return torch.stack([im for im, _ in items]), [torch.stack(ts) for ts in zip(*(t for _, t in items))]


def augment(image: torch.Tensor, targets: list[torch.Tensor], kinds, aug: Augmentation, generator=None):
    """One sample through `aug`, drawing the scale, crop and flip from torch's RNG (saved with
    the run, so a resumed run draws the same)."""
    sc = aug.scales[int(torch.randint(len(aug.scales), (1,), generator=generator))]
    h, w = image.shape[-2:]
    size = (int(h * sc), int(w * sc))
    if size != (h, w):
        image = F.interpolate(image[None].float(), size=size, mode="bilinear", align_corners=False)[0]
        image = image.round().clamp(0, 255).to(torch.uint8)
        targets = [_resize_nearest(t, size) for t in targets]
    ch, cw = aug.crop
    pad_h, pad_w = max(ch - size[0], 0), max(cw - size[1], 0)
    if pad_h or pad_w:
        image = F.pad(image[None].float(), (0, pad_w, 0, pad_h), mode="reflect")[0].to(torch.uint8)
        targets = [F.pad(t, (0, pad_w, 0, pad_h), value=kind.invalid_value) for t, kind in zip(targets, kinds)]
    top = int(torch.randint(image.shape[-2] - ch + 1, (1,), generator=generator))
    left = int(torch.randint(image.shape[-1] - cw + 1, (1,), generator=generator))
    flip = bool(torch.rand((), generator=generator) > 0.5)
    image = image[..., top:top + ch, left:left + cw]
    targets = [t[..., top:top + ch, left:left + cw] for t in targets]
    if flip:
        image = image.flip(-1)
        targets = [kind.flip_target(t.flip(-1)) for t, kind in zip(targets, kinds)]
    targets = [kind.scale_target(t, sc) for t, kind in zip(targets, kinds)]
    return image.contiguous(), [t.contiguous() for t in targets]


def _resize_nearest(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    x = t[None, None] if t.dim() == 2 else t[None]
    out = F.interpolate(x.float(), size=size, mode="nearest")[0]
    out = out[0] if t.dim() == 2 else out
    return out.to(t.dtype)
