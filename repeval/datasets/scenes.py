"""Scenes: the embedded dense dataset, rendered procedurally (`scenes_render`) like MultiDigits
is composed: no download, deterministic from `split_seed`, built in seconds on a CPU.

Tasks follow NYUv2's: `seg` (5 classes: floor, wall, sphere, box, cylinder; -1 in holes),
`depth` (camera-space z; 0 in holes) and `normal` (unit, camera frame; 0 in holes), at 64x64.
Train and test scenes are drawn from independent streams of the seed. The rendered arrays are
cached (`$REPEVAL_CACHE_DIR/scenes`) with their SHA-256, checked on every load; a cache that
fails the check is rendered again. `export_nyuv2_layout` writes any split in NYUv2's on-disk
layout, so the `nyuv2` loader reads it (the tests do)."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from repeval.datasets.base import DatasetBundle, InputSpec
from repeval.datasets.dense import ArraySource, Augmentation, DenseDataset
from repeval.datasets.files import hwc_to_chw, image_to_uint8
from repeval.datasets.nyuv2 import nyuv2_tasks
from repeval.datasets.scenes_render import CLASSES, render_scene
from repeval.errors import check_choice, check_number, check_seed
from repeval.kinds.base import REDUCTIONS
from repeval.kinds.normals import NORMAL_LOSSES
from repeval.storage import atomic_json, atomic_write, cache_dir, file_sha256

log = logging.getLogger("repeval")
GENERATOR_VERSION = 2  # bump when rendering changes: old caches are then not reused
TASKS = nyuv2_tasks(classes=CLASSES)


def check_args(split_seed: int = 0, n_train: int = 1024, n_test: int = 256, size: int = 64, augment: bool = False,
               normal_loss: str = "l1", metric_reduce: str = "global") -> None:
    owner = "Scenes"
    check_seed(owner, "split_seed", split_seed)
    check_number(owner, "n_train", n_train, kind=int, low=2)
    check_number(owner, "n_test", n_test, kind=int, low=1)
    check_number(owner, "size", size, kind=int, low=16, high=512)
    if not isinstance(augment, bool):
        check_choice(owner, "augment", augment, (True, False))
    check_choice(owner, "normal_loss", normal_loss, NORMAL_LOSSES)
    check_choice(owner, "metric_reduce", metric_reduce, REDUCTIONS)


def render_split(seed: int, stream: int, n: int, size: int) -> dict[str, np.ndarray]:
    """`n` scenes of one split: uint8 images `[n, 3, H, W]`, seg `[n, H, W]`, depth `[n, 1, H, W]`,
    normals `[n, 3, H, W]`."""
    rng = np.random.default_rng([seed, stream])
    scenes = [render_scene(rng, size) for _ in range(n)]
    return {
        "images": np.stack([image_to_uint8(s[0]) for s in scenes]),
        "seg": np.stack([s[1] for s in scenes]).astype(np.int8),
        "depth": np.stack([hwc_to_chw(s[2]) for s in scenes]),
        "normal": np.stack([hwc_to_chw(s[3]) for s in scenes]),
    }


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        h.update(key.encode())
        h.update(np.ascontiguousarray(arrays[key]).tobytes())
    return h.hexdigest()


def cached_split(seed: int, stream: int, n: int, size: int) -> dict[str, np.ndarray]:
    """`render_split`, from the cache when a valid copy is there."""
    key = f"v{GENERATOR_VERSION}-seed{seed}-stream{stream}-n{n}-size{size}"
    folder = cache_dir("scenes")
    data, meta = folder / f"{key}.npz", folder / f"{key}.json"
    if data.is_file() and meta.is_file():
        try:
            record = json.loads(meta.read_text())
            if file_sha256(data) == record["file_sha256"]:
                with np.load(data) as f:
                    arrays = {k: f[k] for k in f.files}
                if _digest(arrays) == record["sha256"]:
                    return arrays
            log.warning("scenes cache %s is not valid; rendering again", data)
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("scenes cache %s cannot be read; rendering again", data)
    arrays = render_split(seed, stream, n, size)
    atomic_write(data, lambda f: np.savez(f, **arrays))
    atomic_json({"sha256": _digest(arrays), "file_sha256": file_sha256(data), "generator_version": GENERATOR_VERSION},
                meta)
    return arrays


def _source(arrays: dict[str, np.ndarray]) -> ArraySource:
    return ArraySource(arrays["images"], [arrays["seg"].astype(np.int64), arrays["depth"], arrays["normal"]])


def build_scenes(split_seed: int = 0, n_train: int = 1024, n_test: int = 256, size: int = 64, augment: bool = False,
                 normal_loss: str = "l1", metric_reduce: str = "global") -> DatasetBundle:
    """Render (or read from the cache) the Scenes splits.

    >>> bundle = build_scenes(n_train=4, n_test=2)
    >>> [t.name for t in bundle.tasks], bundle.train[0][0].shape
    (['seg', 'depth', 'normal'], torch.Size([3, 64, 64]))
    """
    check_args(split_seed, n_train, n_test, size, augment, normal_loss, metric_reduce)
    tasks = nyuv2_tasks(normal_loss, metric_reduce, classes=CLASSES)
    train = cached_split(split_seed, 0, n_train, size)
    test = cached_split(split_seed, 1, n_test, size)
    return DatasetBundle(
        name="scenes",
        args=dict(split_seed=split_seed, n_train=n_train, n_test=n_test, size=size, augment=augment,
                  normal_loss=normal_loss, metric_reduce=metric_reduce),
        train=DenseDataset(_source(train), tasks, Augmentation((1.0, 1.2, 1.5), (size, size)) if augment else None),
        test=DenseDataset(_source(test), tasks),
        tasks=tasks,
        input=InputSpec(3, size, size, mean=(0.5,) * 3, std=(0.5,) * 3),
        report={"generator_version": GENERATOR_VERSION},
    )


def export_nyuv2_layout(arrays: dict[str, np.ndarray], folder: str | Path) -> Path:
    """Write one split's arrays as NYUv2's `image/label/depth/normal/N.npy` files (HWC floats)."""
    folder = Path(folder)
    for name in ("image", "label", "depth", "normal"):
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i in range(len(arrays["images"])):
        np.save(folder / "image" / f"{i}.npy", np.moveaxis(arrays["images"][i], 0, -1).astype(np.float64) / 255.0)
        np.save(folder / "label" / f"{i}.npy", arrays["seg"][i].astype(np.float64))
        np.save(folder / "depth" / f"{i}.npy", np.moveaxis(arrays["depth"][i], 0, -1))
        np.save(folder / "normal" / f"{i}.npy", np.moveaxis(arrays["normal"][i], 0, -1))
    return folder
