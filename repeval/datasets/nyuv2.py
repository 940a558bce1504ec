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
from repeval.errors import DataNotFoundError, check_bool, check_choice, check_fixed_split
from repeval.kinds import kind_of
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

    def load(self, i: int) -> tuple[np.ndarray, list[np.ndarray]]:
        image, label, depth, normal = (np.load(self.folder / f / f"{i}.npy") for f in self.folders)
        return (image_to_uint8(image), [label.astype(np.int64), hwc_to_chw(depth).astype(np.float32),
                                        hwc_to_chw(normal).astype(np.float32)])


def image_to_uint8(image: np.ndarray) -> np.ndarray:
    """HWC float in [0, 1] (or uint8) -> CHW uint8."""
    if image.dtype != np.uint8:
        image = np.clip(np.rint(image.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(image, -1, 0))


def hwc_to_chw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a[..., None] if a.ndim == 2 else a, -1, 0))


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


def check_sample(source, folder: Path, tasks) -> tuple[int, int, int]:
    """Read sample 0 once and check each target against the image's size, naming the file that
    does not fit; returns the image's (channels, height, width)."""
    try:
        image, targets = source.load(0)
    except (ValueError, OSError) as e:
        raise DataNotFoundError(f"cannot read sample 0 under {str(folder)!r}: {e}") from None
    c, h, w = image.shape
    for task, array in zip(tasks, targets):
        shape = (h, w) if kind_of(task).target_is_index else (task.num_classes, h, w)
        if tuple(array.shape) != shape:
            raise DataNotFoundError(
                f"{str(folder / task.name)!r}: sample 0 has shape {list(array.shape)} after loading, expected {list(shape)}")
    return c, h, w


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
    c, h, w = check_sample(train_source, root / splits[0], tasks)
    check_sample(test_source, root / splits[1], tasks)
    if train_augmentation is not None:
        train_augmentation = train_augmentation.for_size(h, w)
    crop = (h, w) if train_augmentation is None else train_augmentation.crop
    spec = InputSpec(c, crop[0], crop[1], mean=(0.5,) * c, std=(0.5,) * c)  # 2x - 1, as Auto-lambda
    return DatasetBundle(
        name=name, args={**args, "data_dir": str(root)},
        train=DenseDataset(train_source, tasks, train_augmentation),
        test=DenseDataset(test_source, tasks, None),
        tasks=tasks, input=spec,
        report={"train": len(train_source), "test": len(test_source)},
    )
