"""Cityscapes, in the two preprocessed layouts the multi-task literature uses (256x512 or 128x256).

variant "dgr" (default; Auto-lambda's, which the DGR code reads): PNG/TIF files
    DATA_DIR/{train,val}/image/N.png      RGB
    DATA_DIR/{train,val}/seg/N.png        Cityscapes labelIds -> the 19 train classes, void -> -1
    DATA_DIR/{train,val}/part_seg/N.tif   panoptic-parts uids (int32) -> 10 part classes, 0 = background
    DATA_DIR/{train,val}/depth/N.png      raw 16-bit disparity: 0 -> -1 (invalid), p -> (p - 1) / 1024
Tasks seg (19), part_seg (10), disp; training samples get a random 256x256 crop and flips.

variant "mtan" (MTAN's, read by CAGrad, Nash-MTL, LibMTL): .npy files
    DATA_DIR/{train,val}/image/N.npy      (H, W, 3) float in [0, 1]
    DATA_DIR/{train,val}/label_7/N.npy    (H, W) 7 categories, -1 = ignore (LibMTL renames it label/)
    DATA_DIR/{train,val}/depth/N.npy      (H, W, 1) inverse depth, 0 = invalid
Tasks seg (7) and depth; no augmentation (as those papers)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from repeval.datasets.base import DatasetBundle
from repeval.datasets.dense import Augmentation
from repeval.datasets.files import class_map, image_to_uint8, read_image, read_npy, value_map
from repeval.datasets.nyuv2 import count_samples, folder_bundle
from repeval.errors import DataNotFoundError, check_bool, check_choice, check_fixed_split
from repeval.kinds.base import REDUCTIONS
from repeval.tasks import TaskSpec

VARIANTS = ("dgr", "mtan")
CLASSES_19 = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
              "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")
LABEL_IDS_19 = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)
CATEGORIES_7 = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
PARTS = ("background", "torso", "head", "arms", "legs", "windows", "wheels", "lights", "license plate", "chassis")
# semantic id * 100 + part id -> part class (Auto-lambda's grouping of the human and vehicle parts)
PART_CLASSES = {
    1: (2401, 2501), 2: (2402, 2502), 3: (2403, 2503), 4: (2404, 2504),
    5: (2601, 2701, 2801), 6: (2602, 2702, 2802), 7: (2603, 2703, 2803), 8: (2604, 2704, 2804), 9: (2605, 2705, 2805),
}


def cityscapes_tasks(variant: str = "dgr", metric_reduce: str = "global") -> tuple[TaskSpec, ...]:
    reduce = (("reduce", metric_reduce),)
    if variant == "mtan":
        return (TaskSpec("seg", 7, CATEGORIES_7, kind="segmentation"), TaskSpec("depth", 1, kind="depth", options=reduce))
    return (
        TaskSpec("seg", 19, CLASSES_19, kind="segmentation"),
        TaskSpec("part_seg", 10, PARTS, kind="segmentation"),
        TaskSpec("disp", 1, kind="disparity", options=reduce),
    )


TASKS = cityscapes_tasks()

_SEG_LOOKUP = np.full(256, -1, dtype=np.int64)
_SEG_LOOKUP[list(LABEL_IDS_19)] = np.arange(19)


def map_seg_labels(label_ids: np.ndarray) -> np.ndarray:
    """labelIds -> 19 train classes; every other id (void) -> -1."""
    return _SEG_LOOKUP[np.clip(label_ids.astype(np.int64), 0, 255)]


def part_classes(uids: np.ndarray) -> np.ndarray:
    """Panoptic-parts uids -> the 10 part classes. A uid is `sid` (<= 99), `sid iid` (5 digits)
    or `sid iid pid` (7 digits); only the last carries a part, read as sid * 100 + pid."""
    uids = uids.astype(np.int64)
    sid_pid = np.where(uids >= 100_000, (uids // 100_000) * 100 + uids % 100, -1)
    out = np.zeros(uids.shape, dtype=np.int64)
    for cls, codes in PART_CLASSES.items():
        out[np.isin(sid_pid, codes)] = cls
    return out


def map_disparity(raw: np.ndarray) -> np.ndarray:
    """Raw 16-bit disparity at 2048 px width -> disparity at 512 px; 0 (no measurement) -> -1.
    Raw 1 maps to a valid 0 (infinitely far, e.g. sky)."""
    raw = raw.astype(np.float32)
    return np.where(raw == 0, -1.0, (raw - 1) / (256 * 4)).astype(np.float32)


class CityscapesPngSource:
    FOLDERS = {"image": "png", "seg": "png", "part_seg": "tif", "depth": "png"}

    def __init__(self, folder: Path):
        self.folder = folder
        self.count = count_samples(folder, self.FOLDERS)

    def __len__(self) -> int:
        return self.count

    def files(self, i: int) -> list[Path]:
        return [self.folder / name / f"{i}.{extension}" for name, extension in self.FOLDERS.items()]

    def load(self, i: int):
        image, seg, parts, depth = self.files(i)
        return (image_to_uint8(read_image(image, "RGB"), image),
                [map_seg_labels(class_map(read_image(seg), seg)), part_classes(class_map(read_image(parts), parts)),
                 map_disparity(value_map(read_image(depth), depth))])


class CityscapesNpySource:
    def __init__(self, folder: Path):
        label = "label_7" if (folder / "label_7").is_dir() or not (folder / "label").is_dir() else "label"
        self.folder, self.folders = folder, ("image", label, "depth")
        self.count = count_samples(folder, {f: "npy" for f in self.folders})

    def __len__(self) -> int:
        return self.count

    def files(self, i: int) -> list[Path]:
        return [self.folder / f / f"{i}.npy" for f in self.folders]

    def load(self, i: int):
        image, label, depth = self.files(i)
        return (image_to_uint8(read_npy(image), image),
                [class_map(read_npy(label), label), value_map(read_npy(depth), depth)])


def check_args(data_dir=None, split_seed: int = 0, variant: str = "dgr", augment: bool | None = None,
               metric_reduce: str = "global") -> None:
    check_fixed_split("cityscapes", split_seed)
    check_choice("Cityscapes", "variant", variant, VARIANTS)
    if augment is not None:
        check_bool("Cityscapes", "augment", augment)
    check_choice("Cityscapes", "metric_reduce", metric_reduce, REDUCTIONS)


def build_cityscapes(data_dir: str, split_seed: int = 0, variant: str = "dgr", augment: bool | None = None,
                     metric_reduce: str = "global") -> DatasetBundle:
    """Cityscapes from `data_dir` in the `variant`'s layout. `augment` defaults to the
    variant's protocol (dgr: 256x256 crops and flips; mtan: none)."""
    check_args(data_dir, split_seed, variant, augment, metric_reduce)
    root = Path(data_dir).expanduser()
    augment = (variant == "dgr") if augment is None else augment
    source = CityscapesPngSource if variant == "dgr" else CityscapesNpySource
    if not root.is_dir():
        raise DataNotFoundError(f"cityscapes folder {str(root)!r} does not exist")
    if not (root / "train").is_dir():
        raise DataNotFoundError(f"{str(root)!r} has no train/ folder; expected the {variant!r} layout (see repeval.datasets.cityscapes)")
    # Auto-lambda: 256x256 crops of 256x512 images.
    return folder_bundle("cityscapes", root, cityscapes_tasks(variant, metric_reduce), source,
                         dict(split_seed=split_seed, variant=variant, augment=augment, metric_reduce=metric_reduce),
                         train_augmentation=Augmentation((1.0,), crop="square") if augment else None)


# Panoptic-parts uids -> the part class each stands for: sid only, sid+iid, and sid+iid+pid ones.
SYNTHETIC_PART_UIDS = {24: 0, 24001: 0, 2400102: 2, 2500101: 1, 2600106: 0, 2600305: 9, 2700102: 6, 2800304: 8,
                       2400100: 0, 2000101: 0}


def write_synthetic(folder: Path, variant: str = "dgr", n_train: int = 3, n_test: int = 2,
                    height: int = 16, width: int = 32, seed: int = 0) -> Path:
    """Random samples in Auto-lambda's layout (PNG image, labelIds PNG, panoptic-parts uid TIF,
    16-bit disparity PNG) or MTAN's (.npy image, label_7, inverse depth): the tests' fixtures and
    `reproduce cityscapes --smoke`'s data. `SYNTHETIC_PART_UIDS` says what each part uid means."""
    from PIL import Image

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_test)):
        for i in range(n):
            image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            if variant == "mtan":
                for name in ("image", "label_7", "depth"):
                    (folder / split / name).mkdir(parents=True, exist_ok=True)
                np.save(folder / split / "image" / f"{i}.npy", image.astype(np.float64) / 255)
                np.save(folder / split / "label_7" / f"{i}.npy", rng.integers(-1, 7, (height, width)).astype(np.float64))
                depth = rng.uniform(0.01, 0.4, (height, width, 1)) * (rng.random((height, width, 1)) > 0.2)
                np.save(folder / split / "depth" / f"{i}.npy", depth.astype(np.float32))
                continue
            for name in ("image", "seg", "part_seg", "depth"):
                (folder / split / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / split / "image" / f"{i}.png")
            Image.fromarray(rng.integers(0, 34, (height, width)).astype(np.uint8)).save(folder / split / "seg" / f"{i}.png")
            uids = rng.choice(list(SYNTHETIC_PART_UIDS), size=(height, width)).astype(np.int32)
            Image.fromarray(uids, mode="I").save(folder / split / "part_seg" / f"{i}.tif")
            disparity = rng.integers(0, 30000, (height, width)).astype(np.uint16)
            disparity[0, :4] = [0, 1, 1025, 2049]  # invalid, a valid 0 (sky), 1.0, 2.0
            Image.fromarray(disparity).save(folder / split / "depth" / f"{i}.png")
    return folder
