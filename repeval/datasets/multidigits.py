"""MultiDigits: the embedded default dataset, MultiMNIST-style pairs of real handwritten digits.

Built from scikit-learn's bundled digits (1,797 real 8x8 images, no download). Each canvas holds
two upscaled digits, one at the top left and one at the bottom right, overlapping in the middle.
Tasks: `left` (10 classes), `right` (10) and `sum` (19, ordinal).

The source digits are split into disjoint train and test pools *before* composing, so no
handwriting sample of the test canvases was ever seen in training.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from repeval.datasets.base import ArrayDataset, DatasetBundle, InputSpec
from repeval.errors import check_number, check_seed
from repeval.tasks import TaskSpec

TASKS = (
    TaskSpec("left", 10, tuple(str(d) for d in range(10))),
    TaskSpec("right", 10, tuple(str(d) for d in range(10))),
    TaskSpec("sum", 19, tuple(str(s) for s in range(19)), ordinal=True),
)


def _source_digits(digit_size: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    images = F.interpolate(images, size=(digit_size, digit_size), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()
    return images, digits.target.astype(np.int64)


def _compose(
    pool: np.ndarray, pool_labels: np.ndarray, n: int, canvas: int, jitter: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canvases, their labels and the pool positions of their (left, right) digits."""
    size = pool.shape[-1]
    left = rng.integers(0, len(pool), n)
    right = rng.integers(0, len(pool), n)
    offsets = rng.integers(0, jitter + 1, size=(n, 4))
    images = np.zeros((n, 1, canvas, canvas), dtype=np.uint8)
    far = canvas - size
    for i in range(n):
        ly, lx, ry, rx = offsets[i]
        top = images[i, 0, ly : ly + size, lx : lx + size]
        np.maximum(top, pool[left[i]], out=top)
        bottom = images[i, 0, far - ry : far - ry + size, far - rx : far - rx + size]
        np.maximum(bottom, pool[right[i]], out=bottom)
    a, b = pool_labels[left], pool_labels[right]
    return images, np.stack([a, b, a + b], axis=1), np.stack([left, right], axis=1)


def check_args(split_seed: int, n_train: int, n_test: int, canvas: int, digit_size: int, jitter: int,
               test_fraction: float) -> None:
    """The options' ranges, checked before anything is built (at config time)."""
    owner = "MultiDigits"
    check_seed(owner, "split_seed", split_seed)
    # Batch norm needs two samples per training batch.
    check_number(owner, "n_train", n_train, kind=int, low=2)
    check_number(owner, "n_test", n_test, kind=int, low=1)
    check_number(owner, "digit_size", digit_size, kind=int, low=4)
    check_number(owner, "canvas", canvas, kind=int, low=digit_size)
    check_number(owner, "jitter", jitter, kind=int, low=0, high=canvas - digit_size)
    check_number(owner, "test_fraction", test_fraction, low=0.0, high=0.95, low_open=True)


def build_multidigits(
    split_seed: int = 0,
    n_train: int = 10_000,
    n_test: int = 2_000,
    canvas: int = 32,
    digit_size: int = 20,
    jitter: int = 2,
    test_fraction: float = 0.25,
) -> DatasetBundle:
    """Compose the MultiDigits train and test splits, deterministically from `split_seed`.

    >>> bundle = build_multidigits(n_train=64, n_test=16)
    >>> bundle.train.images.shape, [t.name for t in bundle.tasks]
    ((64, 1, 32, 32), ['left', 'right', 'sum'])
    """
    check_args(split_seed, n_train, n_test, canvas, digit_size, jitter, test_fraction)
    digits, labels = _source_digits(digit_size)
    rng = np.random.default_rng(split_seed)
    order = rng.permutation(len(digits))
    n_test_pool = int(round(test_fraction * len(digits)))
    test_pool, train_pool = order[:n_test_pool], order[n_test_pool:]

    train_x, train_y, train_src = _compose(digits[train_pool], labels[train_pool], n_train, canvas, jitter, rng)
    test_x, test_y, test_src = _compose(digits[test_pool], labels[test_pool], n_test, canvas, jitter, rng)
    scaled = train_x.astype(np.float64) / 255.0
    spec = InputSpec(1, canvas, canvas, mean=(float(scaled.mean()),), std=(float(scaled.std()),))
    args = dict(
        split_seed=split_seed, n_train=n_train, n_test=n_test, canvas=canvas,
        digit_size=digit_size, jitter=jitter, test_fraction=test_fraction,
    )
    return DatasetBundle(
        name="multidigits",
        args=args,
        # `source_digits`: indices into sklearn's load_digits of each canvas's (left, right) digit.
        train=ArrayDataset(train_x, train_y, extras={"source_digits": train_pool[train_src]}),
        test=ArrayDataset(test_x, test_y, extras={"source_digits": test_pool[test_src]}),
        tasks=TASKS,
        input=spec,
        report={"source_digits": {"train_pool": len(train_pool), "test_pool": len(test_pool)}},
    )
