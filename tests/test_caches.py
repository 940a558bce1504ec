"""Caches are checked before they are trusted: damaged or foreign ones are rebuilt with a notice."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from repeval import datasets
from repeval.probes.embeddings import extract, source_from_timm
from repeval.storage import cache_dir

ARGS = {"n_train": 64, "n_test": 32}


def _flip_byte(path, offset_fraction=0.6):
    data = bytearray(path.read_bytes())
    data[int(len(data) * offset_fraction)] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _foreign(path):
    other = extract(source_from_timm("test_efficientnet", "multidigits", dataset_args=ARGS))
    assert not other.from_cache
    (foreign,) = [p for p in cache_dir("embeddings").glob("*.npz") if p != path]
    shutil.copy(foreign, path)


@pytest.mark.parametrize("damage", [_flip_byte, _truncate, _foreign], ids=["flipped-byte", "truncated", "foreign"])
def test_a_damaged_embedding_cache_is_rebuilt_with_a_notice(damage, caplog):
    source = source_from_timm("test_resnet", "multidigits", dataset_args=ARGS)
    first = extract(source)
    (path,) = cache_dir("embeddings").glob("*.npz")
    assert extract(source).from_cache
    damage(path)
    with caplog.at_level("WARNING", logger="repeval"):
        again = extract(source)
    assert not again.from_cache and f"embedding cache {path} is not valid" in caplog.text
    for split in ("train", "test"):
        np.testing.assert_array_equal(again.split(split).features, first.split(split).features)
        np.testing.assert_array_equal(again.split(split).labels, first.split(split).labels)
    assert extract(source).from_cache  # the rebuilt file is trusted again


@pytest.mark.parametrize("damage", ["flip", "truncate", "meta", "no-meta"])
def test_a_damaged_utkface_cache_is_rebuilt_with_a_notice(utkface_dir, damage, caplog):
    first = datasets.build("utkface", data_dir=str(utkface_dir), size=16)
    # Copied out of the memory map before the file underneath is damaged.
    expected = {s: (np.array(d.images[d.rows]), d.labels.copy()) for s, d in (("train", first.train), ("test", first.test))}
    (folder,) = cache_dir("utkface").iterdir()
    images, meta = folder / "images.npy", folder / "meta.json"
    if damage == "flip":
        _flip_byte(images, 0.9)
    elif damage == "truncate":
        _truncate(images)
    elif damage == "meta":
        meta.write_text('{"files": [')
    else:
        meta.unlink()
    with caplog.at_level("INFO", logger="repeval"):
        again = datasets.build("utkface", data_dir=str(utkface_dir), size=16)
    assert "decoding" in caplog.text
    if damage != "no-meta":
        assert f"UTKFace cache {folder} is not valid" in caplog.text
    for split, (images_, labels) in expected.items():
        data = getattr(again, split)
        np.testing.assert_array_equal(np.asarray(data.images)[data.rows], images_)
        np.testing.assert_array_equal(data.labels, labels)
