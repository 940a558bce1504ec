"""Datasets by name. `build(name, **args)` returns a `DatasetBundle`."""

from __future__ import annotations

from collections.abc import Callable

from repeval.datasets.base import (
    ArrayDataset, DatasetBundle, InputNormalizer, InputSpec, collate_batch, normalize_batch,
)
from repeval.datasets import multidigits, utkface
from repeval.datasets.multidigits import build_multidigits
from repeval.datasets.utkface import build_utkface
from repeval.registry import Registry
from repeval.tasks import TaskSpec

DATASETS: Registry[Callable[..., DatasetBundle]] = Registry("dataset")
DATASETS.register("multidigits")(build_multidigits)
DATASETS.register("utkface")(build_utkface)

# Datasets that read a folder take `data_dir`; the embedded ones take none.
NEEDS_DATA_DIR = {"utkface"}
# Each dataset's tasks, known without loading it (a sweep expands `single` into one run per task).
TASKS: dict[str, tuple[TaskSpec, ...]] = {"multidigits": multidigits.TASKS, "utkface": utkface.TASKS}


def task_names(name: str) -> list[str]:
    DATASETS.get(name)
    return [t.name for t in TASKS[name]]


def build(name: str, **args) -> DatasetBundle:
    """Build a registered dataset.

    >>> bundle = build("multidigits", n_train=32, n_test=8)
    >>> len(bundle.train), len(bundle.test)
    (32, 8)
    """
    return DATASETS.get(name)(**args)


def list_datasets() -> list[str]:
    return DATASETS.names()


__all__ = [
    "ArrayDataset", "DatasetBundle", "InputSpec", "DATASETS", "NEEDS_DATA_DIR",
    "build", "list_datasets", "TASKS", "task_names", "collate_batch", "normalize_batch", "InputNormalizer",
]
