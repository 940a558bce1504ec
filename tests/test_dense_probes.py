"""Dense checkpoints' per-pixel probe and universality: closed forms and brute force."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from repeval.kinds import kind_of
from repeval.probes.dense import least_squares_head, regression_universality, sample_pixels
from repeval.tasks import TaskSpec


def test_least_squares_head_is_the_normal_equations_solution():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(200, 5)), rng.normal(size=(200, 3))
    W, b = least_squares_head(X, Y)
    A = np.hstack([X, np.ones((200, 1))])
    closed = np.linalg.solve(A.T @ A, A.T @ Y)
    np.testing.assert_allclose(np.vstack([W, b]), closed, rtol=1e-10, atol=1e-12)


def test_regression_universality_on_perfectly_linear_depth():
    """Depth that is a linear function of the features: the optimal head's error is 0, so the
    gap is the random heads' own error."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4))
    depth = X @ np.array([0.3, -0.2, 0.1, 0.05]) + 2.0
    kind = kind_of(TaskSpec("depth", 1, kind="depth"))
    r = regression_universality(kind, (X, depth[:, None]), (X, depth[:, None]), n_random=4, optimal="train-fit")
    assert r["train"]["optimal"] == pytest.approx(0.0, abs=1e-6)  # predictions are scored in float32
    assert r["train"]["gap_mean"] == pytest.approx(r["train"]["random_mean"], rel=1e-6)
    assert r["train"]["universality"] == pytest.approx(1 / r["train"]["gap_mean"])


def test_held_out_regression_head_is_ridge_chosen_on_image_grouped_folds():
    """Noisy linear depth, 30 images of 10 pixels: the CV-chosen ridge head (refitted) scores
    close to the noise floor on fresh pixels, and its choice is recorded."""
    rng = np.random.default_rng(2)
    X, X_test = rng.normal(size=(300, 6)), rng.normal(size=(300, 6))
    w = rng.normal(size=6)
    depth, depth_test = X @ w + 3.0 + rng.normal(0, 0.1, 300), X_test @ w + 3.0 + rng.normal(0, 0.1, 300)
    kind = kind_of(TaskSpec("depth", 1, kind="depth"))
    groups = np.repeat(np.arange(30), 10)
    r = regression_universality(kind, (X, depth[:, None]), (X_test, depth_test[:, None]), n_random=4, groups=groups)
    assert r["choice"]["l2"] in r["choice"]["cv_mse"] and min(r["choice"]["cv_mse"].values()) < 0.02
    assert r["test"]["optimal"] < 0.1  # mean |error| of N(0, 0.1) noise is 0.08
    assert r["test"]["gap_mean"] == pytest.approx(r["test"]["random_mean"] - r["test"]["optimal"], rel=1e-9)


def test_sampled_pixel_features_are_the_upsampled_map_at_those_pixels():
    class Encoder(torch.nn.Module):
        num_features = 2

        def forward(self, x):
            return x[:, :2, ::4, ::4]  # a 4x4 map of an 16x16 image

    images = torch.randint(0, 256, (3, 3, 16, 16), dtype=torch.uint8)
    seg = torch.randint(0, 3, (3, 16, 16))

    class Data(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return images[i], [seg[i]]

        def __getitems__(self, idx):
            return images[idx], [seg[idx]]

    from repeval.datasets import InputSpec

    spec = InputSpec(3, 16, 16, (0.0,) * 3, (1.0,) * 3)
    pixels = sample_pixels(Encoder(), Data(), spec, pixels_per_image=10, seed=0)
    up = torch.nn.functional.interpolate((images.float() / 255)[:, :2, ::4, ::4], size=(16, 16), mode="bilinear",
                                         align_corners=True)
    index = torch.randint(256, (3, 10), generator=torch.Generator().manual_seed(0))
    for i in range(3):
        for j in range(10):
            r, c = divmod(int(index[i, j]), 16)
            np.testing.assert_allclose(pixels.features[i * 10 + j], up[i, :, r, c].numpy(), rtol=1e-6)
            assert pixels.targets[0][i * 10 + j] == seg[i, r, c]


def test_probe_on_a_dense_checkpoint_says_so_and_runs_the_pixel_probe(tmp_path, capsys):
    from repeval.app.cli import main
    from repeval.training.config import TrainConfig
    from repeval.training.loop import train

    run = train(TrainConfig(dataset="scenes", dataset_args=dict(n_train=16, n_test=8, size=32), epochs=1, batch_size=8,
                            aspp_width=4, progress=False, out_dir=str(tmp_path / "runs")))
    assert main(["probe", str(run), "--universality", "--n-random", "2", "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert "dense tasks: the per-image probes (dt,svm,knn) do not apply; running a per-pixel linear probe" in out
    rows = json.loads((tmp_path / "p" / "probe.json").read_text())["rows"]
    assert [(r["task"], r["probe"]) for r in rows] == [("seg", "pixel-linear"), ("depth", "pixel-linear"), ("normal", "pixel-linear")]
    assert 0 <= rows[0]["miou"] <= 1 and rows[1]["abs_err"] > 0 and 0 < rows[2]["mean_angle"] < 180
    urows = json.loads((tmp_path / "p" / "universality.json").read_text())["rows"]
    assert [r["task"] for r in urows] == ["seg", "depth", "normal"] and all(r["gap_mean"] > 0 for r in urows)
    assert all(r["optimal_reading"] == "held-out" and r["optimal_loss_source"] == "test" and r["l2"] > 0 for r in urows)
    assert main(["universality", str(run), "--head", "mlp", "--out", str(tmp_path / "u")]) == 2
    assert "--head mlp does not apply to dense checkpoints" in capsys.readouterr().err
    # Per-image tools refuse a dense checkpoint in one line, naming what applies instead.
    capsys.readouterr()
    assert main(["tsne", str(run), "--out", str(tmp_path / "t")]) == 2
    err = capsys.readouterr().err
    assert "has dense tasks (seg (segmentation), depth (depth), normal (normals))" in err and len(err.strip().splitlines()) == 1
