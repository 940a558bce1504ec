"""Test data in the real on-disk formats."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

# The real folder's bad names (see repeval/datasets/utkface.py).
RACELESS = ["39_1_20170116174525125.jpg.chip.jpg", "61_1_20170109142408075.jpg.chip.jpg",
            "61_1_20170109150557335.jpg.chip.jpg"]
SPACE = "24_0_1_20170116220224657 .jpg.chip.jpg"  # parses (official code keeps it)
NO_DOT = "55_0_0_20170116232725357jpg.chip.jpg"  # outside the official glob
CORRUPT = "30_1_2_20170116000000001.jpg.chip.jpg"
EMPTY = "40_0_3_20170116000000002.jpg.chip.jpg"


def _jpeg(path: Path, rng: np.random.Generator, size: int = 48) -> None:
    # Smooth colour gradients: real JPEG content that survives compression.
    base = rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, size)[None, :, None] * rng.integers(-80, 80, 3)
    img = np.clip(base + ramp + np.zeros((size, 1, 1)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, format="JPEG", quality=90)


def make_utkface_folder(folder: Path, n_good: int = 40, seed: int = 0) -> Path:
    """A small UTKFace folder: `n_good` valid JPEGs plus every kind of bad file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ages = [1, 10, 11, 20, 21, 60, 61, 116] + list(rng.integers(1, 100, n_good))
    for i, age in enumerate(ages[:n_good]):
        gender, race = i % 2, i % 5
        _jpeg(folder / f"{age}_{gender}_{race}_2017011612{i:07d}.jpg.chip.jpg", rng)
    for name in [*RACELESS, SPACE, NO_DOT]:
        _jpeg(folder / name, rng)
    (folder / CORRUPT).write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / EMPTY).write_bytes(b"")
    return folder


def make_nyuv2_folder(folder: Path, n_train: int = 4, n_test: int = 3, size: int = 32, seed: int = 0) -> Path:
    """NYUv2's MTAN layout ({train,val}/{image,label,depth,normal}/N.npy, HWC floats, -1 and 0 for
    invalid), filled with rendered scenes."""
    from repeval.datasets.scenes import export_nyuv2_layout, render_split

    for split, stream, n in (("train", 0, n_train), ("val", 1, n_test)):
        export_nyuv2_layout(render_split(seed, stream, n, size), folder / split)
    return folder


def make_cityscapes_folder(folder: Path, variant: str = "dgr", **kwargs) -> Path:
    from repeval.datasets.cityscapes import write_synthetic

    return write_synthetic(folder, variant, **kwargs)


IMAGEFOLDER_CLASSES = ("cat", "dog", "zebra")


def imagefolder_colour(label: int) -> tuple[int, int, int]:
    return (40 + 80 * label, 100, 220 - 90 * label)


def make_imagefolder(folder: Path, n_train: int = 4, n_val: int = 2) -> Path:
    """torchvision's ImageFolder layout: {train,val}/<class>/<image>, PNG and JPEG of assorted
    sizes, each image one solid colour per class (PNG exact), plus files that are not images."""
    for split, n in (("train", n_train), ("val", n_val)):
        for label, name in enumerate(IMAGEFOLDER_CLASSES):
            d = folder / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                size = (40 + 8 * i, 30 + 4 * label)  # (width, height): not square, not the target size
                image = Image.new("RGB", size, imagefolder_colour(label))
                image.save(d / (f"{i}.png" if i % 2 == 0 else f"{i}.JPEG"), quality=100)
        (folder / split / "README.txt").write_text("not a class folder")
        (folder / split / IMAGEFOLDER_CLASSES[0] / "notes.txt").write_text("not an image")
    return folder


def make_pascal_folder(folder: Path, n_train: int = 3, n_val: int = 2, size: int = 32, seed: int = 0,
                       person: Callable[[int], bool] = lambda k: k % 2 == 0) -> Path:
    """PASCAL_MT's layout (see repeval.datasets.pascal) with `size` x `size` samples: images k
    with `person(k)` (even-numbered by default) have a person whose Pascal-Part annotation marks
    a head (rows 2-5) and a right upper leg (rows 20-23) at columns 4-11; the others have no
    person. Context labels are vertical bands."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    ids = {"train": [f"2008_{i:06d}" for i in range(n_train)], "val": [f"2009_{i:06d}" for i in range(n_val)]}
    for d in ("JPEGImages", "ImageSets/Context", "semseg/VOC12", "human_parts", "sal_distill", "normals_distill",
              "pascal-context/trainval"):
        (folder / d).mkdir(parents=True, exist_ok=True)
    for split, names in ids.items():
        (folder / "ImageSets" / "Context" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for k, name in enumerate(names):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / "JPEGImages" / f"{name}.jpg")
            seg = rng.choice(np.array([0, 1, 15, 255], dtype=np.uint8), (size, size))
            Image.fromarray(seg).save(folder / "semseg" / "VOC12" / f"{name}.png")
            Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(folder / "sal_distill" / f"{name}.png")
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / "normals_distill" / f"{name}.png")
            label_map = np.repeat((np.arange(size) // 8).astype(np.uint16)[None], size, axis=0)  # bands 0 (unlabelled), 1, 2, 3
            savemat(folder / "pascal-context" / "trainval" / f"{name}.mat", {"LabelMap": label_map})
            head, leg = np.zeros((size, size), np.uint8), np.zeros((size, size), np.uint8)
            head[2:6, 4:12], leg[20:24, 4:12] = 1, 1
            parts = np.array([("head", head), ("ruleg", leg)], dtype=[("part_name", "O"), ("mask", "O")])
            objects = np.array([("person" if person(k) else "dog", PERSON_CLASS if person(k) else 12, head | leg,
                                 parts if person(k) else np.zeros((0,), dtype=parts.dtype))],
                               dtype=[("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")])
            anno = np.array([(name, objects)], dtype=[("imname", "O"), ("objects", "O")])
            savemat(folder / "human_parts" / f"{name}.mat", {"anno": anno})
    return folder


PERSON_CLASS = 15
