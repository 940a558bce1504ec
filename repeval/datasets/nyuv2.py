"""NYUv2 in the MTAN preprocessed layout (the one Auto-lambda, DGR, LibMTL and Nash-MTL read):

    DATA_DIR/{train,val}/{image,label,depth,normal}/N.npy      N = 0 .. count-1

image (288, 384, 3) float in [0, 1]; label (288, 384) with classes 0..12 and -1 = ignore;
depth (288, 384, 1) metres, 0 = invalid; normal (288, 384, 3) unit vectors, 0 = invalid.
"val" (654 images) is the test set, as in every paper that uses this layout.

Images are stored as uint8 and mapped to [-1, 1] (Auto-lambda's 2x - 1) by the input spec; the
preprocessed floats are 8-bit values / 255, so nothing is lost. Training samples get the
Auto-lambda/DGR augmentation (scales 1.0, 1.2, 1.5, a crop back to the image size, flips)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from repeval.datasets.base import DatasetBundle, InputSpec
from repeval.datasets.dense import Augmentation, DenseDataset
from repeval.datasets.files import class_map, image_to_uint8, read_npy, value_map
from repeval.errors import DataNotFoundError, check_bool, check_choice, check_fixed_split
from repeval.kinds.base import REDUCTIONS
from repeval.kinds.normals import NORMAL_LOSSES
from repeval.tasks import TaskSpec

CLASSES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa", "table", "tv",
           "wall", "window")  # the 13-class NYUv2 labelling (Couprie et al.) in MTAN's order
FOLDERS = ("image", "label", "depth", "normal")
SPLITS = ("train", "val")
SCALES = (1.0, 1.2, 1.5)


def nyuv2_tasks(normal_loss: str = "l1", metric_reduce: str = "global", classes=CLASSES) -> tuple[TaskSpec, ...]:
    reduce = (("reduce", metric_reduce),)
    return (
        TaskSpec("seg", len(classes), tuple(classes), kind="segmentation"),
        TaskSpec("depth", 1, kind="depth", options=reduce),
        TaskSpec("normal", 3, kind="normals", options=(("loss", normal_loss), *reduce)),
    )


TASKS = nyuv2_tasks()


class NpyFolderSource:
    """One split of the layout, read one sample at a time (all four files of index i)."""

    def __init__(self, folder: Path, folders: tuple[str, ...] = FOLDERS):
        self.folder, self.folders = folder, folders
        self.count = count_samples(folder, {f: "npy" for f in folders})

    def __len__(self) -> int:
        return self.count

    def files(self, i: int) -> list[Path]:
        return [self.folder / f / f"{i}.npy" for f in self.folders]

    def load(self, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        files = self.files(i)
        image, label, *values = (read_npy(path) for path in files)
        return (image_to_uint8(image, files[0]),
                [class_map(label, files[1]), *(value_map(v, path) for v, path in zip(values, files[2:]))])


def count_samples(folder: Path, folders: dict[str, str]) -> int:
    """The number of samples of a split, after checking that every folder (name -> file
    extension) holds files 0..N-1."""
    layout = f"{{{','.join(SPLITS)}}}/{{{','.join(folders)}}}/N.{'|'.join(sorted(set(folders.values())))}"
    counts = {}
    for name, extension in folders.items():
        sub = folder / name
        if not sub.is_dir():
            raise DataNotFoundError(f"{str(sub)!r} does not exist; expected the layout DATA_DIR/{layout}")
        stems = sorted(int(p.stem) for p in sub.glob(f"*.{extension}") if p.stem.isdigit())
        if not stems:
            raise DataNotFoundError(f"{str(sub)!r} holds no N.{extension} files; expected the layout DATA_DIR/{layout}")
        if stems != list(range(len(stems))):
            missing = sorted(set(range(stems[-1] + 1)) - set(stems))[:3]
            raise DataNotFoundError(f"{str(sub)!r} has gaps in its numbering (missing {missing}); files must be 0..N-1.{extension}")
        counts[name] = len(stems)
    if len(set(counts.values())) > 1:
        raise DataNotFoundError(f"{str(folder)!r}: the folders hold different numbers of samples ({counts})")
    return next(iter(counts.values()))


def check_args(data_dir=None, split_seed: int = 0, augment: bool = True, normal_loss: str = "l1",
               metric_reduce: str = "global") -> None:
    check_fixed_split("nyuv2", split_seed)
    check_bool("NYUv2", "augment", augment)
    check_choice("NYUv2", "normal_loss", normal_loss, NORMAL_LOSSES)
    check_choice("NYUv2", "metric_reduce", metric_reduce, REDUCTIONS)


def build_nyuv2(data_dir: str, split_seed: int = 0, augment: bool = True, normal_loss: str = "l1",
                metric_reduce: str = "global") -> DatasetBundle:
    """NYUv2 (seg 13 classes, depth, normals) from the MTAN layout under `data_dir`.

    `normal_loss`: l1 (the DGR/Auto-lambda code, default) or cosine (MTAN, LibMTL, Nash-MTL).
    `metric_reduce`: global (pixel means over the test set, default) or batch (the Auto-lambda
    code's batch-weighted means, to compare with its published numbers)."""
    check_args(data_dir, split_seed, augment, normal_loss, metric_reduce)
    return folder_bundle("nyuv2", Path(data_dir).expanduser(), nyuv2_tasks(normal_loss, metric_reduce),
                         NpyFolderSource, dict(split_seed=split_seed, augment=augment, normal_loss=normal_loss,
                                               metric_reduce=metric_reduce),
                         train_augmentation=Augmentation(SCALES) if augment else None)


def folder_bundle(name: str, root: Path, tasks, source_cls, args: dict, train_augmentation: Augmentation | None,
                  splits: tuple[str, str] = SPLITS, **source_kwargs) -> DatasetBundle:
    """A bundle from a `{train,val}` folder pair (shared by the folder-layout datasets)."""
    if not root.is_dir():
        raise DataNotFoundError(f"{name} folder {str(root)!r} does not exist")
    train_source = source_cls(root / splits[0], **source_kwargs)
    test_source = source_cls(root / splits[1], **source_kwargs)
    train, test = DenseDataset(train_source, tasks), DenseDataset(test_source, tasks)  # each checks its sample 0
    c, h, w = train.sample_shape
    if train_augmentation is not None:
        train.augmentation = train_augmentation.for_size(h, w)
    crop = (h, w) if train.augmentation is None else train.augmentation.crop
    spec = InputSpec(c, crop[0], crop[1], mean=(0.5,) * c, std=(0.5,) * c)  # 2x - 1, as Auto-lambda
    return DatasetBundle(
        name=name, args={**args, "data_dir": str(root)},
        train=train, test=test,
        tasks=tasks, input=spec,
        report={"train": len(train_source), "test": len(test_source)},
    )
