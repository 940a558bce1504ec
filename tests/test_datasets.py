from __future__ import annotations

import fnmatch

import numpy as np
import pytest
import torch

from repeval import datasets
from repeval.datasets import utkface
from repeval.errors import DataNotFoundError, InvalidChoiceError
from tests import fixtures


@pytest.mark.parametrize("name", datasets.list_datasets())
def test_every_registered_dataset_builds_consistent_splits(name, small_dataset_args):
    from repeval.kinds import kind_of

    bundle = datasets.build(name, **small_dataset_args(name))
    assert bundle.name == name
    kinds = [kind_of(t) for t in bundle.tasks]
    for split in (bundle.train, bundle.test):
        images, targets = split.__getitems__(list(range(min(8, len(split)))))
        assert images.dtype == torch.uint8
        b, c, h, w = images.shape
        assert c == bundle.input.channels
        if split is bundle.train:
            assert (h, w) == (bundle.input.height, bundle.input.width)
        targets = list(targets.unbind(1)) if isinstance(targets, torch.Tensor) else list(targets)
        assert len(targets) == len(bundle.tasks)
        for kind, task, y in zip(kinds, bundle.tasks, targets):
            if not kind.dense:
                assert y.shape == (b,) and 0 <= y.min() and y.max() < task.num_classes
            elif kind.target_is_index:
                assert y.shape == (b, h, w) and y.dtype == torch.int64
                assert -1 <= y.min() and y.max() < task.num_classes
            else:
                assert y.shape == (b, task.num_classes, h, w) and y.dtype == torch.float32 and torch.isfinite(y).all()
    # Rebuilding from the stored args gives the same data (what probing relies on).
    again = datasets.build(name, **bundle.args)
    np.testing.assert_array_equal(again.test.indices, bundle.test.indices)
    first, again_first = bundle.test[0], again.test[0]
    torch.testing.assert_close(first[0], again_first[0])
    for a, b_ in zip(first[1] if isinstance(first[1], list) else [first[1]], again_first[1] if isinstance(again_first[1], list) else [again_first[1]]):
        torch.testing.assert_close(a, b_)


def test_unknown_dataset_names_the_choices():
    with pytest.raises(InvalidChoiceError, match="unknown dataset 'mnist'; choose from: cityscapes, imagefolder, multidigits, nyuv2, pascal, scenes, utkface"):
        datasets.build("mnist")


# ---- MultiDigits -------------------------------------------------------------------------------


def test_multidigits_is_deterministic_and_seed_dependent():
    a = datasets.build("multidigits", n_train=64, n_test=32, split_seed=3)
    b = datasets.build("multidigits", n_train=64, n_test=32, split_seed=3)
    c = datasets.build("multidigits", n_train=64, n_test=32, split_seed=4)
    np.testing.assert_array_equal(a.train.images, b.train.images)
    assert not np.array_equal(a.train.images, c.train.images)


def test_multidigits_test_handwriting_never_seen_in_training():
    bundle = datasets.build("multidigits", n_train=4000, n_test=1000)
    train_src = set(bundle.train.extras["source_digits"].ravel())
    test_src = set(bundle.test.extras["source_digits"].ravel())
    assert not train_src & test_src
    assert len(test_src) > 300  # the test pool is really used, not a handful of digits


def test_multidigits_labels_match_source_digits():
    from sklearn.datasets import load_digits

    target = load_digits().target
    bundle = datasets.build("multidigits", n_train=200, n_test=50)
    src = bundle.train.extras["source_digits"]
    np.testing.assert_array_equal(bundle.train.labels[:, 0], target[src[:, 0]])
    np.testing.assert_array_equal(bundle.train.labels[:, 1], target[src[:, 1]])
    np.testing.assert_array_equal(bundle.train.labels[:, 2], target[src[:, 0]] + target[src[:, 1]])
    # Each source digit is drawn whole (the canvas is a pixel-wise max) at an allowed offset:
    # the left one within `jitter` of the top-left corner, the right one of the bottom-right.
    from repeval.datasets.multidigits import _source_digits

    digits, _ = _source_digits(20)
    far, offsets = 32 - 20, [(dy, dx) for dy in range(3) for dx in range(3)]
    for canvas, (left, right) in zip(bundle.train.images[:, 0], src):
        assert any((canvas[dy : dy + 20, dx : dx + 20] >= digits[left]).all() for dy, dx in offsets)
        assert any((canvas[far - dy : far - dy + 20, far - dx : far - dx + 20] >= digits[right]).all() for dy, dx in offsets)


def test_multidigits_rejects_bad_sizes():
    with pytest.raises(InvalidChoiceError, match="'n_train' parameter of MultiDigits must be an int >= 2. Got 0"):
        datasets.build("multidigits", n_train=0)
    with pytest.raises(InvalidChoiceError, match="'canvas'"):
        datasets.build("multidigits", canvas=10, digit_size=20)


# ---- UTKFace ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "expected"), [(0, 0), (1, 0), (10, 0), (11, 1), (20, 1), (21, 2), (50, 4), (51, 5), (60, 5), (61, 6), (116, 6)]
)
def test_age_bins_are_right_inclusive(age, expected):
    assert utkface.age_bin(age) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("26_1_3_20170119180105366.jpg.chip.jpg", (2, 1, 3)),
        (fixtures.SPACE, (2, 0, 1)),
        (fixtures.RACELESS[0], None),
        ("26_2_3_20170119180105366.jpg.chip.jpg", None),  # gender must be 0/1
        ("26_1_5_20170119180105366.jpg.chip.jpg", None),  # race must be 0..4
        ("x_1_3_20170119180105366.jpg.chip.jpg", None),
    ],
)
def test_parse_name(name, expected):
    assert utkface.parse_name(name) == expected


def test_utkface_skips_bad_files_and_reports_them_once(utkface_dir, caplog):
    with caplog.at_level("WARNING", logger="repeval"):
        bundle = datasets.build("utkface", data_dir=utkface_dir)
    report = bundle.report
    assert report["unmatched_names"] == [fixtures.NO_DOT]
    assert sorted(report["unparsed_names"]) == sorted(fixtures.RACELESS)
    assert sorted(report["undecodable"]) == sorted([fixtures.CORRUPT, fixtures.EMPTY])
    assert len(bundle.train) + len(bundle.test) == 40 + 1  # the good files and the one with a space
    warnings = [r for r in caplog.records if "UTKFace: skipped" in r.message]
    assert len(warnings) == 1 and "skipped 6 of 47 files" in warnings[0].message


def test_utkface_split_is_the_official_one(utkface_dir):
    bundle = datasets.build("utkface", data_dir=utkface_dir, split_seed=7)
    names = sorted(p.name for p in utkface_dir.iterdir())
    matched = [n for n in names if fnmatch.fnmatchcase(n, "*.jpg.chip.jpg")]
    # The authors' code: random_split of every globbed file, then the name filter.
    train, test = torch.utils.data.random_split(matched, [0.8, 0.2], torch.Generator().manual_seed(7))
    keep = lambda split: [n for n in split if utkface.parse_name(n) and n not in (fixtures.CORRUPT, fixtures.EMPTY)]  # noqa: E731
    assert [matched[i] for i in bundle.train.indices] == keep(list(train))
    assert [matched[i] for i in bundle.test.indices] == keep(list(test))
    labels = [utkface.parse_name(matched[i]) for i in bundle.train.indices]
    np.testing.assert_array_equal(bundle.train.labels, np.array(labels))
    assert not set(bundle.train.indices) & set(bundle.test.indices)
    other = datasets.build("utkface", data_dir=utkface_dir, split_seed=8)
    assert list(other.test.indices) != list(bundle.test.indices)


def test_utkface_decodes_once_then_memory_maps(utkface_dir, monkeypatch):
    first = datasets.build("utkface", data_dir=utkface_dir, size=32)
    assert first.train.image_shape == (3, 32, 32)
    monkeypatch.setattr(utkface, "_decode", lambda *a: pytest.fail("decoded again despite the cache"))
    second = datasets.build("utkface", data_dir=utkface_dir, size=32)
    assert isinstance(second.train.images, np.memmap)
    np.testing.assert_array_equal(second.train.__getitems__([0, 3])[0], first.train.__getitems__([0, 3])[0])


def test_utkface_image_content_survives_the_cache(utkface_dir):
    from PIL import Image

    bundle = datasets.build("utkface", data_dir=utkface_dir, size=48)
    matched = sorted(p.name for p in utkface_dir.iterdir() if fnmatch.fnmatchcase(p.name, "*.jpg.chip.jpg"))
    i = 5
    expected = np.asarray(Image.open(utkface_dir / matched[bundle.train.indices[i]]).convert("RGB")).transpose(2, 0, 1)
    np.testing.assert_array_equal(bundle.train.__getitems__([i])[0][0].numpy(), expected)


def test_utkface_missing_folder_says_where_it_comes_from(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist.*UTKFace.*--data-dir"):
        datasets.build("utkface", data_dir=tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match=r"no UTKFace images \(\*.jpg.chip.jpg\)"):
        datasets.build("utkface", data_dir=tmp_path / "empty")
    with pytest.raises(DataNotFoundError, match="--data-dir"):
        datasets.build("utkface")


def test_dataset_registry_metadata_matches_the_builders():
    from repeval.datasets import DATASETS, NEEDS_DATA_DIR, dataset_options

    for name in DATASETS.names():
        assert DATASETS.meta(name)["needs_data_dir"] == ("data_dir" in dataset_options(name)), name
    assert NEEDS_DATA_DIR == {"utkface", "nyuv2", "cityscapes", "imagefolder", "pascal"}


def test_imagefolder_reads_torchvisions_layout(tmp_path):
    """Classes are train/'s sub-folders in sorted order; images are resized (shorter side) and
    centre-cropped to `size`; files that are not images and loose files are ignored."""
    from tests.fixtures import IMAGEFOLDER_CLASSES, imagefolder_colour, make_imagefolder

    root = make_imagefolder(tmp_path / "inet")
    bundle = datasets.build("imagefolder", data_dir=str(root), size=16, augment=False)
    (task,) = bundle.tasks
    assert (task.name, task.num_classes, task.label_names) == ("class", 3, IMAGEFOLDER_CLASSES)
    assert (len(bundle.train), len(bundle.test)) == (12, 6)
    images, labels = bundle.train.__getitems__(list(range(12)))
    assert images.shape == (12, 3, 16, 16) and labels.shape == (12, 1)
    for image, label in zip(images, labels[:, 0].tolist()):
        colour = torch.tensor(imagefolder_colour(label), dtype=torch.uint8).view(3, 1, 1)
        error = (image.int() - colour.int()).abs().max()
        assert error <= 3  # PNG exact; JPEG within its rounding
    assert sorted(labels[:, 0].tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    (root / "val" / "lion").mkdir()
    (root / "val" / "lion" / "0.png").write_bytes((root / "val" / "cat" / "0.png").read_bytes())
    with pytest.raises(DataNotFoundError, match="has class folder 'lion', which train/ lacks"):
        datasets.build("imagefolder", data_dir=str(root))
    with pytest.raises(DataNotFoundError, match=r"does not exist; expected DATA_DIR/\{train,val\}/<class>/<image>"):
        datasets.build("imagefolder", data_dir=str(tmp_path / "nothing"))
    with pytest.raises(InvalidChoiceError, match="--split-seed must be 0"):
        datasets.build("imagefolder", data_dir=str(root), split_seed=1)

