"""Datasets written in their real on-disk formats at their recipe sizes, for the data benchmarks
(not part of the package; the tests' small fixtures are `tests/fixtures.py`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_nyuv2_layout(folder: Path, n: int, height: int = 288, width: int = 384) -> Path:
    """`n` random training samples (and one validation sample) in NYUv2's MTAN layout."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for name in ("image", "label", "depth", "normal"):
            (folder / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n if split == "train" else 1):
            np.save(folder / split / "image" / f"{i}.npy", rng.random((height, width, 3), dtype=np.float32))
            np.save(folder / split / "label" / f"{i}.npy", rng.integers(-1, 13, (height, width)).astype(np.float32))
            np.save(folder / split / "depth" / f"{i}.npy", rng.uniform(0.5, 8, (height, width, 1)).astype(np.float32))
            normal = rng.normal(size=(height, width, 3)).astype(np.float32)
            np.save(folder / split / "normal" / f"{i}.npy", normal / np.linalg.norm(normal, axis=-1, keepdims=True))
    return folder


def write_imagefolder_jpegs(folder: Path, n: int, classes: int = 4, size: tuple[int, int] = (500, 375)) -> Path:
    """ImageFolder's layout with `n` training JPEGs of ImageNet's typical size (and one per class in val)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("val", classes)):
        for i in range(count):
            d = folder / split / f"class{i % classes}"
            d.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8)  # smooth, JPEG-like content
            Image.fromarray(pixels).resize(size, Image.BILINEAR).save(d / f"{i}.JPEG", quality=90)
    return folder
