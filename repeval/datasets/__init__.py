"""Datasets by name. `build(name, **args)` returns a `DatasetBundle`.

The registry names its builders lazily, so listing or validating names imports no torch; the
array classes (`ArrayDataset`, `InputSpec`...) load from `repeval.datasets.base` on first use.
Each dataset module has `build_<name>(...)`, `check_args(...)` (the same parameters, checked
without loading anything) and `TASKS`."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from repeval.registry import Registry
from repeval.validation import check_options

if TYPE_CHECKING:
    from repeval.datasets.base import DatasetBundle

DATASETS: Registry[Callable[..., DatasetBundle]] = Registry("dataset")
DATASETS.register_lazy("multidigits", "repeval.datasets.multidigits:build_multidigits", needs_data_dir=False,
                       summary="embedded default: canvases of two digits, tasks left, right and their sum",
                       reference="built from scikit-learn's bundled digits (load_digits)")
DATASETS.register_lazy("utkface", "repeval.datasets.utkface:build_utkface", needs_data_dir=True,
                       summary="faces: age group, gender and race (the paper's Table 1)",
                       reference="Zhang, Song & Qi, CVPR 2017; the DGR paper's protocol")
DATASETS.register_lazy("scenes", "repeval.datasets.scenes:build_scenes", needs_data_dir=False,
                       summary="embedded: ray-cast rooms with segmentation, depth and normals",
                       reference="repeval's CPU stand-in for NYUv2")
DATASETS.register_lazy("nyuv2", "repeval.datasets.nyuv2:build_nyuv2", needs_data_dir=True,
                       summary="indoor scenes: 13-class segmentation, depth, normals (MTAN's .npy layout)",
                       reference="Silberman et al., ECCV 2012; MTAN / Auto-lambda preprocessing")
DATASETS.register_lazy("cityscapes", "repeval.datasets.cityscapes:build_cityscapes", needs_data_dir=True,
                       summary="street scenes: segmentation, part segmentation, disparity (Auto-lambda's layout)",
                       reference="Cordts et al., CVPR 2016; Auto-lambda / DGR preprocessing")
DATASETS.register_lazy("imagefolder", "repeval.datasets.imagefolder:build_imagefolder", needs_data_dir=True,
                       summary="single-task image classification in torchvision's ImageFolder layout (ImageNet)",
                       reference="torchvision ImageFolder; the paper's Table 4(a)")
DATASETS.register_lazy("pascal", "repeval.datasets.pascal:build_pascal", needs_data_dir=True,
                       summary="PASCAL-Context: segmentation, human parts, saliency, normals, edges",
                       reference="Mottaghi et al., CVPR 2014; ASTMT's PASCAL_MT (Maninis et al., CVPR 2019)")

# Datasets that read a folder take `data_dir`; the embedded ones take none.
NEEDS_DATA_DIR = {name for name in DATASETS.names() if DATASETS.meta(name)["needs_data_dir"]}

_BASE_NAMES = ("ArrayDataset", "DatasetBundle", "InputSpec", "collate_batch", "normalize_batch", "InputNormalizer")


def __getattr__(name: str) -> Any:
    if name in _BASE_NAMES:
        return getattr(importlib.import_module("repeval.datasets.base"), name)
    if name == "TASKS":  # each dataset's tasks, known without loading its data
        return {n: _module(n).TASKS for n in DATASETS.names()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _module(name: str):
    return inspect.getmodule(DATASETS.get(name))


def task_names(name: str) -> list[str]:
    return [t.name for t in _module(name).TASKS]


def task_specs(name: str, selected=None) -> list:
    """The `TaskSpec`s of dataset `name` (those named in `selected`, when given), without loading data."""
    return [t for t in _module(name).TASKS if selected is None or t.name in selected]


def dataset_options(name: str) -> dict[str, Any]:
    """Option name -> default of a registered dataset's builder."""
    return {k: p.default for k, p in inspect.signature(DATASETS.get(name)).parameters.items()}


def check_args(name: str, args: dict) -> None:
    """Refuse unknown options, wrong types and out-of-range values of a dataset, without building it.

    >>> check_args("multidigits", {"n_trian": 10})
    Traceback (most recent call last):
    ...
    repeval.errors.InvalidChoiceError: dataset 'multidigits' has no option 'n_trian'; its options are: split_seed, n_train, n_test, canvas, digit_size, jitter, test_fraction
    """
    allowed = dataset_options(name)
    args = dict(args)
    if args.get("tasks") is not None:
        check_task_selection(name, args["tasks"])
    args.pop("tasks", None)
    check_options("dataset", name, args, allowed, free=("data_dir",))
    _module(name).check_args(**{**allowed, **args})


def check_task_selection(name: str, tasks) -> None:
    """`--tasks`: a non-empty list of distinct task names of dataset `name`.

    >>> check_task_selection("multidigits", ["left", "size"])
    Traceback (most recent call last):
    ...
    repeval.errors.InvalidChoiceError: dataset 'multidigits' has no task 'size'; its tasks: left, right, sum
    """
    from repeval.errors import InvalidChoiceError

    known = task_names(name)
    if isinstance(tasks, str) or not isinstance(tasks, (list, tuple)) or not tasks:
        raise InvalidChoiceError(f"--tasks must list one or more of dataset {name!r}'s tasks ({', '.join(known)}). Got {tasks!r} instead.")
    for t in tasks:
        if t not in known:
            raise InvalidChoiceError(f"dataset {name!r} has no task {t!r}; its tasks: {', '.join(known)}")
    if len(set(tasks)) != len(tasks):
        raise InvalidChoiceError(f"--tasks names a task twice: {', '.join(tasks)}")


def build(name: str, **args) -> DatasetBundle:
    """Build a registered dataset.

    >>> bundle = build("multidigits", n_train=32, n_test=8)
    >>> len(bundle.train), len(bundle.test)
    (32, 8)
    """
    tasks = args.pop("tasks", None)
    bundle = DATASETS.get(name)(**args)
    if tasks is None:
        return bundle
    from repeval.datasets.base import select_tasks

    return select_tasks(bundle, tasks)


def list_datasets() -> list[str]:
    return DATASETS.names()


__all__ = [
    "ArrayDataset", "DatasetBundle", "InputSpec", "DATASETS", "NEEDS_DATA_DIR", "build", "check_args",
    "check_task_selection", "dataset_options", "task_specs", "list_datasets", "TASKS", "task_names", "collate_batch", "normalize_batch", "InputNormalizer",
]
