"""The dense datasets' real on-disk formats (generated fixtures), their one-line errors, the joint
augmentation, and the embedded scenes (determinism, masks, validated cache)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repeval import datasets
from repeval.datasets.cityscapes import SYNTHETIC_PART_UIDS, map_disparity, map_seg_labels, part_classes
from repeval.datasets.dense import Augmentation, augment
from repeval.datasets.scenes import cached_split, render_split
from repeval.errors import DataError, DataNotFoundError, InvalidChoiceError
from repeval.kinds import kind_of
from tests.fixtures import make_cityscapes_folder, make_nyuv2_folder


def test_nyuv2_loader_reads_the_mtan_layout_exactly(tmp_path):
    folder = make_nyuv2_folder(tmp_path / "nyu", n_train=3, n_test=2, size=32)
    bundle = datasets.build("nyuv2", data_dir=str(folder), augment=False)
    arrays = render_split(0, 1, 2, 32)  # what the fixture wrote to val/
    images, (seg, depth, normal) = bundle.test.__getitems__([0, 1])
    np.testing.assert_array_equal(images.numpy(), arrays["images"])
    np.testing.assert_array_equal(seg.numpy(), arrays["seg"])
    np.testing.assert_array_equal(depth.numpy(), arrays["depth"])
    np.testing.assert_array_equal(normal.numpy(), arrays["normal"])
    assert [t.kind for t in bundle.tasks] == ["segmentation", "depth", "normals"]
    assert bundle.tasks[0].num_classes == 13 and bundle.input.mean == (0.5, 0.5, 0.5)  # 2x - 1


def test_nyuv2_missing_or_malformed_folders_get_one_line_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="nyuv2 folder .* does not exist"):
        datasets.build("nyuv2", data_dir=str(tmp_path / "nowhere"))
    folder = make_nyuv2_folder(tmp_path / "nyu", n_train=3, n_test=2, size=32)
    (folder / "train" / "depth" / "1.npy").unlink()
    with pytest.raises(DataNotFoundError, match=r"depth' has gaps in its numbering \(missing \[1\]\)"):
        datasets.build("nyuv2", data_dir=str(folder))
    np.save(folder / "train" / "depth" / "1.npy", np.zeros((32, 32, 1)))
    np.save(folder / "train" / "normal" / "0.npy", np.zeros((32, 30, 3)))
    with pytest.raises(DataError, match=r"normal/0.npy': the normal target has shape \[3, 32, 30\]; expected \[3, 32, 32\]"):
        datasets.build("nyuv2", data_dir=str(folder))
    with pytest.raises(InvalidChoiceError, match="fixed train/val split"):
        datasets.check_args("nyuv2", {"data_dir": "x", "split_seed": 3})
    with pytest.raises(InvalidChoiceError, match="'normal_loss' parameter of NYUv2 must be one of 'l1', 'cosine'"):
        datasets.check_args("nyuv2", {"data_dir": "x", "normal_loss": "l2"})


def test_cityscapes_label_maps():
    ids = np.array([[0, 7, 8, 26, 33, 30, 255]])
    assert map_seg_labels(ids).tolist() == [[-1, 0, 1, 13, 18, -1, -1]]
    uids = np.array(list(SYNTHETIC_PART_UIDS), dtype=np.int32)
    assert part_classes(uids).tolist() == list(SYNTHETIC_PART_UIDS.values())
    assert map_disparity(np.array([0, 1, 1025, 2049], dtype=np.uint16)).tolist() == [-1.0, 0.0, 1.0, 2.0]


def test_cityscapes_dgr_layout_default_and_mtan_variant(tmp_path):
    dgr = datasets.build("cityscapes", data_dir=str(make_cityscapes_folder(tmp_path / "cs", height=16, width=32)))
    assert [(t.name, t.kind, t.num_classes) for t in dgr.tasks] == [
        ("seg", "segmentation", 19), ("part_seg", "segmentation", 10), ("disp", "disparity", 1)]
    images, (seg, parts, disp) = dgr.train.__getitems__([0, 1])
    assert images.shape == (2, 3, 16, 16)  # Auto-lambda's square crops of the wide images
    test_images, (_, _, test_disp) = dgr.test.__getitems__([0])
    assert test_images.shape == (1, 3, 16, 32)
    assert test_disp[0, 0, 0, :4].tolist() == [-1.0, 0.0, 1.0, 2.0]
    mtan = datasets.build("cityscapes", data_dir=str(make_cityscapes_folder(tmp_path / "cs7", variant="mtan")),
                          variant="mtan")
    assert [(t.name, t.kind, t.num_classes) for t in mtan.tasks] == [("seg", "segmentation", 7), ("depth", "depth", 1)]
    with pytest.raises(DataNotFoundError, match="expected the 'dgr' layout"):
        datasets.build("cityscapes", data_dir=str(tmp_path))
    with pytest.raises(InvalidChoiceError, match="'variant' parameter of Cityscapes must be one of 'dgr', 'mtan'"):
        datasets.check_args("cityscapes", {"data_dir": "x", "variant": "auto-lambda"})


def test_augmentation_scales_crops_and_flips_every_target_consistently():
    tasks = datasets.TASKS["nyuv2"]
    kinds = [kind_of(t) for t in tasks]
    image = torch.arange(2 * 4 * 3, dtype=torch.uint8).reshape(3, 2, 4) * 3
    seg = torch.tensor([[0, 1, 2, -1], [3, 4, 5, 6]])
    depth = torch.tensor([[[1.0, 2.0, 0.0, 4.0], [5.0, 6.0, 7.0, 8.0]]])
    normal = torch.zeros(3, 2, 4)
    normal[0], normal[1] = 0.6, 0.8
    g = torch.Generator().manual_seed(0)
    out_image, (out_seg, out_depth, out_normal) = augment(image, [seg, depth, normal], kinds,
                                                          Augmentation((2.0,), (2, 4)), generator=g)
    assert out_image.shape == (3, 2, 4) and out_seg.shape == (2, 4) and out_depth.shape == (1, 2, 4)
    # Some crop (top, left) of the sample upscaled x2 (nearest), possibly mirrored, explains every
    # output: labels stay labels, depth is halved (a closer camera) except where invalid (0), and
    # the normals' x changes sign exactly when the sample is mirrored.
    up = lambda a: a.repeat_interleave(2, -2).repeat_interleave(2, -1)  # noqa: E731
    matches = []
    for top in range(3):
        for left in range(5):
            for flip in (False, True):
                crop = lambda a: a[..., top:top + 2, left:left + 4]  # noqa: E731
                mirror = (lambda a: a.flip(-1)) if flip else (lambda a: a)  # noqa: E731
                if (torch.equal(out_seg, mirror(crop(up(seg)))) and torch.equal(out_depth, mirror(crop(up(depth))) / 2)
                        and torch.allclose(out_normal[0], torch.full((2, 4), -0.6 if flip else 0.6))
                        and torch.allclose(out_normal[1], torch.full((2, 4), 0.8))):
                    matches.append((top, left, flip))
    assert matches, "no crop and flip of the upscaled sample gives these targets"


def test_scenes_are_deterministic_with_consistent_masks():
    a, b = render_split(3, 0, 6, 32), render_split(3, 0, 6, 32)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["images"], render_split(4, 0, 6, 32)["images"])
    seg, depth, normal = a["seg"], a["depth"][:, 0], a["normal"]
    holes = seg == -1
    assert holes.any() and (depth[holes] == 0).all() and (normal.transpose(0, 2, 3, 1)[holes] == 0).all()
    assert (depth[~holes] > 0).all()
    valid_normals = normal.transpose(0, 2, 3, 1)[~holes]
    np.testing.assert_allclose(np.linalg.norm(valid_normals, axis=1), 1.0, atol=1e-5)
    assert (valid_normals.sum(1) != 0).all()  # the reference validity rule keeps every valid normal
    assert len(np.unique(seg[~holes])) >= 4  # floor, wall and objects appear


def test_a_corrupt_scenes_cache_is_rendered_again(caplog):
    first = cached_split(0, 0, 4, 32)
    from repeval.storage import cache_dir

    cache = next(cache_dir("scenes").glob("*.npz"))
    cache.write_bytes(cache.read_bytes()[:-20] + b"\0" * 20)
    again = cached_split(0, 0, 4, 32)
    assert "not valid" in caplog.text or "cannot be read" in caplog.text
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])


def test_pascal_reads_the_pascal_mt_layout(tmp_path):
    """Each of the five targets against the files it comes from: 255 -> ignore; Pascal-Part's
    head and right upper leg -> part classes 1 and 5, no person -> all ignore; saliency above
    half; normals 2v/255 - 1 kept on labelled context pixels only; edges = thinned Laplacian of
    the context labels."""
    from PIL import Image
    from scipy.io import loadmat
    from scipy.ndimage import laplace
    from skimage.morphology import thin

    from tests.fixtures import make_pascal_folder

    root = make_pascal_folder(tmp_path / "pascal", size=32)
    bundle = datasets.build("pascal", data_dir=str(root), size=32, augment=False)
    assert [t.kind for t in bundle.tasks] == ["segmentation", "segmentation", "saliency", "normals", "edges"]
    assert (len(bundle.train), len(bundle.test)) == (3, 2)
    for i, name in enumerate(["2008_000000", "2008_000001"]):
        _, (seg, parts, sal, normal, edges) = bundle.train[i]
        raw = np.asarray(Image.open(root / "semseg" / "VOC12" / f"{name}.png")).astype(np.int64)
        assert np.array_equal(seg.numpy(), np.where(raw == 255, -1, raw))
        if i == 0:
            expected = np.zeros((32, 32), np.int64)
            expected[2:6, 4:12], expected[20:24, 4:12] = 1, 5
        else:
            expected = np.full((32, 32), -1)
        assert np.array_equal(parts.numpy(), expected)
        grey = np.asarray(Image.open(root / "sal_distill" / f"{name}.png")).astype(np.float32)
        assert np.array_equal(sal[0].numpy(), (grey / 255 > 0.5).astype(np.float32))
        label_map = loadmat(str(root / "pascal-context" / "trainval" / f"{name}.mat"))["LabelMap"]
        rgb = np.asarray(Image.open(root / "normals_distill" / f"{name}.png")).astype(np.float32)
        np.testing.assert_allclose(normal.numpy(), ((2 * rgb / 255 - 1) * (label_map > 0)[..., None]).transpose(2, 0, 1))
        assert np.array_equal(edges[0].numpy(), thin(laplace(label_map.astype(float)) != 0).astype(np.float32))
    with pytest.raises(DataNotFoundError, match="ImageSets/Context/train.txt' does not exist; expected PASCAL_MT's layout"):
        datasets.build("pascal", data_dir=str(tmp_path))
    with pytest.raises(InvalidChoiceError, match="pascal has a fixed train/val split"):
        datasets.build("pascal", data_dir=str(root), split_seed=3)


def test_pascal_trains_all_five_tasks_with_dgr(tmp_path):
    """Two steps of EW + DGR on the five PASCAL-Context tasks through the whole pipeline: every
    task gets its kind's metrics and a positive penalty."""
    from repeval.training import run as run_files
    from repeval.training.config import DGRConfig, TrainConfig
    from repeval.training.loop import train
    from tests.fixtures import make_pascal_folder

    root = make_pascal_folder(tmp_path / "pascal", n_train=4, size=32)
    config = TrainConfig(dataset="pascal", data_dir=str(root), dataset_args={"size": 32}, backbone="test_resnet",
                         dgr=DGRConfig(dummies=1), epochs=1, batch_size=2, lr=1e-3, optimizer="adam", aspp_width=4,
                         out_dir=str(tmp_path / "runs"), progress=False)
    (line,) = run_files.read_metrics(train(config))
    assert {t: sorted(m) for t, m in line["test"].items()} == {
        "seg": ["miou", "pixel_acc"], "parts": ["miou", "pixel_acc"], "saliency": ["max_iou", "maxf"],
        "normal": ["mean_angle", "median_angle", "within_11.25", "within_22.5", "within_30"], "edges": ["f_exact", "loss"]}
    assert all(v > 0 for v in line["dgr_penalty"].values()) and len(line["dgr_penalty"]) == 5


def test_pascal_trains_through_batches_without_a_person_and_a_real_nan_still_stops(tmp_path, monkeypatch):
    """Only the first of four images has a person: with batches of 2, one batch of the epoch
    leaves the parts task nothing to learn. The epoch trains, the parts loss is the mean over the
    batch with a person and the metrics say how many batches it left out; a NaN from a task that
    has targets stops the run with the usual message."""
    import math

    from repeval.errors import NonFiniteLossError
    from repeval.training import loop
    from repeval.training import run as run_files
    from repeval.training.config import DGRConfig, TrainConfig
    from tests.fixtures import make_pascal_folder

    root = make_pascal_folder(tmp_path / "pascal", n_train=4, size=32, person=lambda k: k == 0)
    config = TrainConfig(dataset="pascal", data_dir=str(root), dataset_args={"size": 32}, backbone="test_resnet",
                         dgr=DGRConfig(dummies=1), epochs=1, batch_size=2, lr=1e-3, optimizer="adam", aspp_width=4,
                         out_dir=str(tmp_path / "runs"), progress=False)
    (line,) = run_files.read_metrics(loop.train(config))
    assert line["batches_without_targets"] == {"seg": 0, "parts": 1, "saliency": 0, "normal": 0, "edges": 0}
    assert all(math.isfinite(v) and v > 0 for v in line["train_loss"].values())
    assert line["dgr_penalty"]["parts"] > 0  # over the batch with a person

    real_step, calls = loop.training_step, {"n": 0}

    def poisoned(*args, **kwargs):
        losses, penalties = real_step(*args, **kwargs)
        calls["n"] += 1
        return (losses * torch.tensor([float("nan"), 1, 1, 1, 1]) if calls["n"] == 2 else losses), penalties

    monkeypatch.setattr(loop, "training_step", poisoned)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 1, step 2"):
        loop.train(TrainConfig(**{**config.__dict__, "out_dir": str(tmp_path / "poisoned")}))
