from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.fixtures import make_cityscapes_folder, make_imagefolder, make_nyuv2_folder, make_pascal_folder, make_utkface_folder


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Every test gets its own cache folder and the same seeds."""
    monkeypatch.setenv("REPEVAL_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture
def utkface_dir(tmp_path):
    return make_utkface_folder(tmp_path / "UTKFace")


# How to build each registered dataset small, so tests parametrised over the registry cover a new
# entry as soon as it gets a line here (a test fails for registered datasets without one).
@pytest.fixture
def small_dataset_args(tmp_path):
    def args(name: str) -> dict:
        if name == "multidigits":
            return dict(n_train=256, n_test=128)
        if name == "utkface":
            return dict(data_dir=str(make_utkface_folder(tmp_path / f"UTKFace-{name}")))
        if name == "scenes":
            return dict(n_train=6, n_test=3, size=32)
        if name == "nyuv2":
            return dict(data_dir=str(make_nyuv2_folder(tmp_path / "nyuv2")))
        if name == "cityscapes":
            return dict(data_dir=str(make_cityscapes_folder(tmp_path / "cityscapes")))
        if name == "pascal":
            return dict(data_dir=str(make_pascal_folder(tmp_path / "pascal")), size=32)
        if name == "imagefolder":
            return dict(data_dir=str(make_imagefolder(tmp_path / "imagefolder")), size=16)
        raise KeyError(f"tests/conftest.py has no small settings for dataset {name!r}; add them")

    return args
