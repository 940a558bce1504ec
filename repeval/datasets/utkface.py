"""UTKFace ("Aligned & Cropped Faces"), as the DGR paper's official code reads it.

Files are named `age_gender_race_datetime.jpg.chip.jpg`. The protocol (authors' `UTKFACE/main.py`):
- files = sorted glob `*.jpg.chip.jpg`; 80/20 `random_split` of *all* of them with a seeded
  generator, then files whose name does not split into 4 fields on `_` are dropped. repeval
  reproduces that split exactly and keeps the split seed apart from the training seed;
- tasks: age in 7 right-inclusive bins (0-10, 11-20, ..., 51-60, 61+), gender (2), race (5);
- 64x64 input, ImageNet mean/std.

Known bad names in the real folder (23,708 files): three lack the race field (dropped, as
officially), `24_0_1_20170116220224657 .jpg.chip.jpg` has a space before the extension (its
labels parse and the official code keeps it, so repeval does too), and
`55_0_0_20170116232725357jpg.chip.jpg` lacks a dot (the official glob never sees it). Files
whose name does not parse and images that fail to decode are skipped, counted and reported once.

Decoding 23k JPEGs every epoch starves a CPU, so the decoded, resized uint8 arrays are cached
once per (folder contents, size) under the cache folder and memory-mapped afterwards.
"""

from __future__ import annotations

import bisect
import fnmatch
import hashlib
import json
import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from repeval.datasets.base import IMAGENET_MEAN, IMAGENET_STD, ArrayDataset, DatasetBundle, InputSpec
from repeval.datasets.files import MAX_IMAGE_SIDE
from repeval.errors import DataNotFoundError, check_number, check_seed
from repeval.storage import atomic_json, atomic_write, cache_dir, file_sha256
from repeval.tasks import TaskSpec

log = logging.getLogger("repeval")

PATTERN = "*.jpg.chip.jpg"
AGE_UPPER_EDGES = (10, 20, 30, 40, 50, 60)  # right-inclusive, as pd.cut in the official code
TASKS = (
    TaskSpec("age", 7, ("0-10", "11-20", "21-30", "31-40", "41-50", "51-60", "61+"), ordinal=True),
    TaskSpec("gender", 2, ("male", "female")),
    TaskSpec("race", 5, ("White", "Black", "Asian", "Indian", "Others")),
)
WHERE_FROM = (
    "UTKFace cannot be downloaded by repeval: get the 'Aligned&Cropped Faces' archive "
    "(UTKFace.tar.gz) from the UTKFace project page (susanqq.github.io/UTKFace), unpack it, "
    "and pass the unpacked folder with --data-dir"
)


def age_bin(age: int) -> int:
    """Age in years -> bin index 0..6 (0-10 -> 0, 11-20 -> 1, ..., 61+ -> 6)."""
    return bisect.bisect_left(AGE_UPPER_EDGES, age)


def parse_name(name: str) -> tuple[int, int, int] | None:
    """`age_gender_race_datetime.jpg.chip.jpg` -> (age bin, gender, race), or None."""
    fields = name.split("_")
    if len(fields) != 4:
        return None
    try:
        age, gender, race = (int(f) for f in fields[:3])
    except ValueError:
        return None
    if not (0 <= age <= 130 and gender in (0, 1) and 0 <= race <= 4):
        return None
    return age_bin(age), gender, race


def _decode(path: Path, size: int) -> np.ndarray | None:
    try:
        with Image.open(path) as img:
            img = img.convert("RGB").resize((size, size), Image.BILINEAR)
            return np.asarray(img, dtype=np.uint8).transpose(2, 0, 1)
    except Exception:  # noqa: BLE001 - any undecodable file is skipped and reported, never fatal
        return None


def _listing_key(folder: Path, files: list[str], size: int) -> str:
    h = hashlib.sha256(f"{folder.resolve()}|{size}".encode())
    for name in files:
        st = (folder / name).stat()
        h.update(f"{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _decoded(folder: Path, files: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decoded `[M, 3, size, size]` images of the decodable files, and the decodable mask.

    The cache is trusted only when its record (`meta.json`, written last) matches this listing
    and the images file has the recorded shape and SHA-256; anything else is rebuilt."""
    where = cache_dir("utkface", _listing_key(folder, files, size))
    images_path, meta_path = where / "images.npy", where / "meta.json"
    if meta_path.exists() or images_path.exists():
        cached, problem = _read_cache(images_path, meta_path, files, size)
        if cached is not None:
            return cached
        log.warning("UTKFace cache %s is not valid (%s); decoding again", where, problem)

    log.info("decoding %d UTKFace images once into %s", len(files), where)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        decoded = list(pool.map(lambda n: _decode(folder / n, size), files))
    ok = np.array([d is not None for d in decoded], dtype=bool)
    images = np.zeros((int(ok.sum()), 3, size, size), dtype=np.uint8)
    for row, img in enumerate(d for d in decoded if d is not None):
        images[row] = img
    meta_path.unlink(missing_ok=True)  # the record goes last: no record, no trusted images
    atomic_write(images_path, lambda f: np.save(f, images, allow_pickle=False))
    atomic_json({"folder": str(folder.resolve()), "size": size, "files": files, "ok": ok.tolist(),
                 "shape": list(images.shape), "sha256": file_sha256(images_path)}, meta_path)
    return np.load(images_path, mmap_mode="r", allow_pickle=False), ok


def _read_cache(images_path: Path, meta_path: Path, files: list[str], size: int):
    """((images, ok), None) from a valid cache, or (None, what is wrong)."""
    try:
        meta = json.loads(meta_path.read_text())
        ok = np.array(meta["ok"], dtype=bool)
        if meta["files"] != files or meta["size"] != size or len(ok) != len(files):
            return None, "it lists other files"
        if file_sha256(images_path) != meta["sha256"]:
            return None, "images.npy does not match its recorded SHA-256"
        images = np.load(images_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, KeyError, TypeError) as e:
        return None, f"{type(e).__name__}: {e}"
    if images.dtype != np.uint8 or list(images.shape) != [int(ok.sum()), 3, size, size]:
        return None, f"images.npy is {images.dtype} {images.shape}"
    return (images, ok), None


def check_args(data_dir: str | os.PathLike | None, split_seed: int, size: int, test_fraction: float) -> None:
    """The options' ranges, checked before anything is read (at config time)."""
    if data_dir is None:
        raise DataNotFoundError(f"UTKFace needs its folder. {WHERE_FROM}.")
    check_seed("UTKFace", "split_seed", split_seed)
    check_number("UTKFace", "size", size, kind=int, low=8, high=MAX_IMAGE_SIDE)
    check_number("UTKFace", "test_fraction", test_fraction, low=0.0, high=0.99, low_open=True)


def build_utkface(
    data_dir: str | os.PathLike | None = None,
    split_seed: int = 0,
    size: int = 64,
    test_fraction: float = 0.2,
) -> DatasetBundle:
    """Load a UTKFace folder with the official DGR protocol (see the module docstring)."""
    check_args(data_dir, split_seed, size, test_fraction)
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise DataNotFoundError(f"UTKFace folder {str(folder)!r} does not exist. {WHERE_FROM}.")

    names = sorted(p.name for p in folder.iterdir() if p.is_file())
    matched = [n for n in names if fnmatch.fnmatchcase(n, PATTERN)]
    if not matched:
        raise DataNotFoundError(
            f"no UTKFace images ({PATTERN}) in {str(folder)!r}. {WHERE_FROM}."
        )
    # The official split runs over every matched file before the name filter; keep it exact.
    generator = torch.Generator().manual_seed(split_seed)
    with warnings.catch_warnings():  # an empty split is refused with a clear error by the caller
        warnings.filterwarnings("ignore", "Length of split", UserWarning)
        splits = torch.utils.data.random_split(range(len(matched)), [1 - test_fraction, test_fraction], generator)
    train_pos, test_pos = (np.array(list(s), dtype=np.int64) for s in splits)

    labels = [parse_name(n) for n in matched]
    parsed = [i for i, lab in enumerate(labels) if lab is not None]
    images, ok = _decoded(folder, [matched[i] for i in parsed], size)
    row_of = np.full(len(matched), -1, dtype=np.int64)  # matched position -> row in `images`
    decodable = [i for i, good in zip(parsed, ok) if good]
    row_of[decodable] = np.arange(len(decodable))

    def split(positions: np.ndarray) -> ArrayDataset:
        keep = positions[row_of[positions] >= 0]
        y = np.array([labels[i] for i in keep], dtype=np.int64).reshape(-1, 3)
        return ArrayDataset(images, y, indices=keep, rows=row_of[keep])

    report = {
        "files": len(names),
        "unmatched_names": [n for n in names if not fnmatch.fnmatchcase(n, PATTERN)],
        "unparsed_names": [n for n, lab in zip(matched, labels) if lab is None],
        "undecodable": [matched[i] for i, good in zip(parsed, ok) if not good],
    }
    skipped = sum(len(v) for k, v in report.items() if k != "files")
    if skipped:
        log.warning(
            "UTKFace: skipped %d of %d files (%d names outside %s, %d unparsable names, %d undecodable)",
            skipped, len(names), len(report["unmatched_names"]), PATTERN,
            len(report["unparsed_names"]), len(report["undecodable"]),
        )
    return DatasetBundle(
        name="utkface",
        args=dict(data_dir=str(folder), split_seed=split_seed, size=size, test_fraction=test_fraction),
        train=split(train_pos),
        test=split(test_pos),
        tasks=TASKS,
        input=InputSpec(3, size, size, IMAGENET_MEAN, IMAGENET_STD),
        report=report,
    )
