"""Reading one dataset file, refusing what does not fit its format.

Every reader names the file in its error (`DataError`): a half-copied dataset answers with the
file to fix, not with a traceback from a DataLoader worker. What the values of a task's target
may be is the task kind's business (`TaskKind.target_problem`); shapes are the dataset's."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from repeval.errors import DataError

# Decoders' errors on damaged files: PIL raises OSError (UnidentifiedImageError, truncated
# data), ValueError or SyntaxError; numpy ValueError or OSError; scipy's MatReadError is a ValueError.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, KeyError, IndexError, TypeError)

# Largest image side a loader accepts: an 8K frame. Larger sizes are typos (size=100000) that
# would ask for tens of GiB per sample.
MAX_IMAGE_SIDE = 8192


def _first_line(error: BaseException, path: Path | None = None) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else type(error).__name__
    return line if path is None else line.replace(f" {str(path)!r}", "")  # the message names the file already


def read_npy(path: Path) -> np.ndarray:
    """A `.npy` array (no pickles), or a `DataError` naming the file."""
    try:
        return np.load(path, allow_pickle=False)
    except DECODE_ERRORS as e:
        raise DataError(f"{str(path)!r} cannot be read as .npy ({_first_line(e)})") from None


def read_image(path: Path, mode: str | None = None) -> np.ndarray:
    """An image file decoded to an array (converted to `mode`, e.g. "RGB"), or a `DataError`."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if max(image.size) > MAX_IMAGE_SIDE * 4:  # decoding would be the memory problem
                raise DataError(f"{str(path)!r} is {image.size[0]}x{image.size[1]} pixels; images larger than "
                                f"{MAX_IMAGE_SIDE * 4} pixels a side are refused")
            return np.array(image.convert(mode) if mode else image)
    except DECODE_ERRORS as e:
        raise DataError(f"{str(path)!r} is not a readable image ({_first_line(e, path)})") from None


def read_mat(path: Path, key: str, **options):
    """Variable `key` of a MATLAB file, or a `DataError` naming the file."""
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    try:
        variables = loadmat(str(path), **options)
    except (*DECODE_ERRORS, MatReadError, NotImplementedError) as e:
        raise DataError(f"{str(path)!r} is not a readable .mat file ({_first_line(e)})") from None
    if key not in variables:
        raise DataError(f"{str(path)!r} has no variable {key!r}")
    return variables[key]


def image_to_uint8(image: np.ndarray, path: Path | str = "image") -> np.ndarray:
    """HWC image, float in [0, 1] (the MTAN layouts) or uint8 -> CHW uint8."""
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise DataError(f"{str(path)!r} holds an array of shape {list(image.shape)}; expected an image [H, W, 3]")
    if image.dtype != np.uint8:
        if image.dtype.kind not in "fiu":
            raise DataError(f"{str(path)!r} holds {image.dtype} values; expected floats in [0, 1] or uint8")
        values = image.astype(np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"{str(path)!r} has non-finite pixel values; expected floats in [0, 1]")
        low, high = float(values.min()), float(values.max())
        if low < -1e-6 or high > 1 + 1e-6:
            scaled = " (0..255-scaled?)" if high > 1.5 else ""
            raise DataError(f"{str(path)!r} has pixel values in [{low:.4g}, {high:.4g}]{scaled}; the layout stores floats in [0, 1]")
        image = np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(image, -1, 0))


def hwc_to_chw(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a[..., None] if a.ndim == 2 else a, -1, 0))


def class_map(labels: np.ndarray, path: Path | str) -> np.ndarray:
    """A class-id map as int64; floats (the MTAN layouts store them) must be whole numbers."""
    if labels.dtype.kind == "f":
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            raise DataError(f"{str(path)!r} has {int((~whole).sum())} class ids that are not whole numbers "
                            f"(e.g. {labels[~whole].flat[0]!r})")
    elif labels.dtype.kind not in "iub":
        raise DataError(f"{str(path)!r} holds {labels.dtype} values; expected class ids")
    return labels.astype(np.int64)


def value_map(values: np.ndarray, path: Path | str) -> np.ndarray:
    """A per-pixel value map `[C, H, W]` as float32 from HWC or HW numbers."""
    if values.dtype.kind not in "fiub":
        raise DataError(f"{str(path)!r} holds {values.dtype} values; expected numbers")
    return hwc_to_chw(values).astype(np.float32)
