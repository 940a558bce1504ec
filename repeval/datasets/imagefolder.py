"""Image classification in torchvision's ImageFolder layout, the way ImageNet is kept on disk:

    DATA_DIR/train/<class>/<image>   and   DATA_DIR/val/<class>/<image>

(any of torchvision's image extensions; ImageNet's validation images sorted into class folders,
as its usual preparation script does). Classes are the train folder's sub-folders in sorted
order (torchvision's `find_classes`); a val class the train folder lacks is refused. One task,
`class`: the paper's single-task DGR experiment (Table 4(a), last row) is
`repeval train imagefolder --data-dir D --method single --dgr`.

Images are decoded per sample (a folder of ImageNet's size does not fit in memory): RGB, shorter
side resized to `size` (bilinear), centre crop `size` x `size`; training images are flipped at
random when `augment`. ImageNet mean and std."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from repeval.datasets.base import IMAGENET_MEAN, IMAGENET_STD, DatasetBundle, InputSpec
from repeval.datasets.files import MAX_IMAGE_SIDE, read_image
from repeval.errors import DataNotFoundError, check_bool, check_fixed_split, check_number
from repeval.tasks import TaskSpec

# The task's name; its classes are the folder's (see `folder_tasks`).
TASKS = (TaskSpec("class", 1),)
LAYOUT = "DATA_DIR/{train,val}/<class>/<image> (torchvision's ImageFolder layout)"


class ImageFolderSplit(torch.utils.data.Dataset):
    """One split: (uint8 [3, size, size], int64 [1] label) per sample, decoded on access."""

    def __init__(self, samples: list[tuple[str, int]], size: int, augment: bool):
        self.paths = [p for p, _ in samples]
        self.labels = np.array([[c] for _, c in samples], dtype=np.int64).reshape(-1, 1)
        self.size = size
        self.augment = augment
        self.indices = np.arange(len(samples))
        self.extras: dict = {}

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return (3, self.size, self.size)

    def select_tasks(self, keep: list[int]) -> ImageFolderSplit:
        return self  # one task

    def load(self, i: int) -> np.ndarray:
        """Image `i` resized and cropped; a file that does not decode raises a `DataError` naming it."""
        image = Image.fromarray(read_image(self.paths[i], "RGB"))
        w, h = image.size
        scale = self.size / min(w, h)
        image = image.resize((max(self.size, round(w * scale)), max(self.size, round(h * scale))), Image.BILINEAR)
        w, h = image.size
        left, top = (w - self.size) // 2, (h - self.size) // 2
        array = np.asarray(image.crop((left, top, left + self.size, top + self.size)), dtype=np.uint8)
        return array.transpose(2, 0, 1)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = torch.from_numpy(np.ascontiguousarray(self.load(int(i))))
        if self.augment and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)
        return image, torch.from_numpy(self.labels[i])

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self[i] for i in idx]
        return torch.stack([im for im, _ in items]), torch.stack([y for _, y in items])


def check_args(data_dir: str | os.PathLike | None, split_seed: int, size: int, augment: bool) -> None:
    if data_dir is None:
        raise DataNotFoundError(f"imagefolder needs --data-dir: the folder that holds {LAYOUT}")
    check_fixed_split("imagefolder", split_seed)
    check_number("ImageFolder", "size", size, kind=int, low=8, high=MAX_IMAGE_SIDE)
    check_bool("ImageFolder", "augment", augment)


def _samples(folder: Path, class_to_idx: dict[str, int] | None) -> tuple[list[tuple[str, int]], dict[str, int]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, make_dataset

    if not folder.is_dir():
        raise DataNotFoundError(f"{str(folder)!r} does not exist; expected {LAYOUT}")
    try:
        classes, found = find_classes(str(folder))
    except FileNotFoundError:
        raise DataNotFoundError(f"{str(folder)!r} has no class folders; expected {LAYOUT}") from None
    if class_to_idx is not None:
        unknown = [c for c in classes if c not in class_to_idx]
        if unknown:
            raise DataNotFoundError(f"{str(folder)!r} has class folder {unknown[0]!r}, which train/ lacks; expected {LAYOUT}")
        found = {c: class_to_idx[c] for c in classes}
    try:
        samples = make_dataset(str(folder), found, extensions=IMG_EXTENSIONS, allow_empty=class_to_idx is not None)
    except FileNotFoundError as e:
        raise DataNotFoundError(f"{str(folder)!r}: {str(e).splitlines()[0]}; expected {LAYOUT}") from None
    if not samples:
        raise DataNotFoundError(f"{str(folder)!r} has no images; expected {LAYOUT}")
    return samples, found


def build_imagefolder(data_dir: str | os.PathLike | None = None, split_seed: int = 0, size: int = 224,
                      augment: bool = True) -> DatasetBundle:
    """Read an ImageFolder tree (see the module docstring); nothing is decoded until used."""
    check_args(data_dir, split_seed, size, augment)
    root = Path(data_dir).expanduser()
    train, class_to_idx = _samples(root / "train", None)
    test, _ = _samples(root / "val", class_to_idx)
    names = tuple(sorted(class_to_idx, key=class_to_idx.get))
    return DatasetBundle(
        name="imagefolder",
        args=dict(data_dir=str(root), split_seed=split_seed, size=size, augment=augment),
        train=ImageFolderSplit(train, size, augment),
        test=ImageFolderSplit(test, size, False),
        tasks=(TaskSpec("class", len(names), names),),
        input=InputSpec(3, size, size, IMAGENET_MEAN, IMAGENET_STD),
        report={"classes": len(names), "train_images": len(train), "val_images": len(test)},
    )
