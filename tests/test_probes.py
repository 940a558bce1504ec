from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from repeval.app.cli import main
from repeval.errors import InvalidChoiceError
from repeval.probes import embeddings as emb_mod
from repeval.probes.embeddings import EmbeddingSet, extract, source_from_checkpoint, source_from_timm
from repeval.probes.registry import PROBES, parse_classifiers
from repeval.probes.report import embedding_maps
from repeval.probes.suite import ProbeConfig, run_probes
from repeval.probes.svm import SharedRBFGram
from repeval.tasks import TaskSpec
from repeval.training.config import TrainConfig
from repeval.training.loop import train


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    run_dir = train(TrainConfig(dataset_args=dict(n_train=256, n_test=96), epochs=1, progress=False, out_dir=str(out)))
    return run_dir / "checkpoint.pt"


def array_set(train_x, train_y, test_x, test_y, name="blobs", num_classes=None) -> EmbeddingSet:
    tasks = None
    if num_classes is not None:
        k = np.asarray(train_y).reshape(len(train_x), -1).shape[1]
        tasks = tuple(TaskSpec(f"t{i}", num_classes, tuple(map(str, range(num_classes)))) for i in range(k))
    return EmbeddingSet.from_arrays(name, train_x, train_y, test_x, test_y, tasks)


def blobs(n=600, classes=4, dim=16, noise=False, seed=0):
    x, y = make_blobs(n_samples=n, centers=classes, n_features=dim, cluster_std=1.0, center_box=(-8, 8), random_state=seed)
    x = x.astype(np.float32)
    if noise:
        y = np.random.default_rng(seed).integers(0, classes, n)
    return x[: n // 2], y[: n // 2], x[n // 2 :], y[n // 2 :]


# ---- embeddings ---------------------------------------------------------------------------


def test_extraction_is_deterministic_and_cached(checkpoint, monkeypatch):
    source = source_from_checkpoint(checkpoint)
    first = extract(source, use_cache=False)  # recomputes, and refreshes the cache
    again = extract(source, use_cache=False)
    assert not first.from_cache and not again.from_cache
    np.testing.assert_array_equal(first.train.features, again.train.features)
    monkeypatch.setattr(emb_mod, "embed", lambda *a, **k: pytest.fail("forward pass despite the cache"))
    cached = extract(source)
    assert cached.from_cache
    for split in ("train", "test"):
        for field in ("features", "labels", "indices"):
            np.testing.assert_array_equal(getattr(cached.split(split), field), getattr(first.split(split), field))
    assert first.train.features.shape == (256, 96) and first.test.labels.shape == (96, 3)


def test_embeddings_are_the_encoders_output_in_dataset_order(checkpoint):
    from repeval import datasets
    from repeval.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt).eval()
    bundle = datasets.build("multidigits", **ckpt["dataset"]["args"])
    images, labels = bundle.test.__getitems__([5, 17])
    with torch.no_grad():
        z = model.encode(datasets.normalize_batch(images, bundle.input))
    got = extract(source_from_checkpoint(checkpoint), use_cache=False)
    np.testing.assert_allclose(got.test.features[[5, 17]], z.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got.test.labels[[5, 17]], labels.numpy())


def test_cache_is_invalidated_when_the_checkpoint_changes(checkpoint, tmp_path):
    before = extract(source_from_checkpoint(checkpoint))
    changed = tmp_path / "changed.pt"
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["encoder"] = {k: (v + 0.01 if v.is_floating_point() else v) for k, v in ckpt["encoder"].items()}
    torch.save(ckpt, changed)
    after = extract(source_from_checkpoint(changed))
    assert not after.from_cache
    assert not np.allclose(after.train.features, before.train.features)


def test_timm_models_are_probed_reproducibly():
    a = extract(source_from_timm("test_resnet", "multidigits", dataset_args=dict(n_train=64, n_test=32)), use_cache=False)
    b = extract(source_from_timm("test_resnet", "multidigits", dataset_args=dict(n_train=64, n_test=32)), use_cache=False)
    np.testing.assert_array_equal(a.train.features, b.train.features)
    with pytest.raises(InvalidChoiceError, match="unknown backbone 'resnet5'"):
        source_from_timm("resnet5", "multidigits")


# ---- probes -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROBES.names())
def test_probe_equals_the_bare_estimator_on_the_same_arrays(name):
    xtr, ytr, xte, yte = blobs(classes=3, seed=1)
    xtr += np.random.default_rng(0).normal(0, 3, xtr.shape).astype(np.float32)  # not trivially separable
    rows = run_probes([array_set(xtr, ytr, xte, yte)], ProbeConfig(classifiers=(name,), seeds=(3,)))
    (row,) = rows
    bare = make_pipeline(StandardScaler(), SVC()) if name == "svm" else PROBES.get(name).make(3)
    expected = bare.fit(xtr, ytr).predict(xte)
    assert row["accuracy"] == pytest.approx(float((expected == yte).mean()), abs=0)


@pytest.mark.parametrize("name", PROBES.names())
def test_probes_beat_chance_on_separable_embeddings_and_not_on_noise(name):
    good = run_probes([array_set(*blobs(classes=4))], ProbeConfig(classifiers=(name,)))
    noise = run_probes([array_set(*blobs(classes=4, noise=True))], ProbeConfig(classifiers=(name,)))
    assert good[0]["accuracy"] > 0.9  # chance: 0.25
    assert noise[0]["accuracy"] < 0.4
    assert good[0]["balanced_accuracy"] > 0.9 and good[0]["macro_f1"] > 0.9


def test_shared_gram_svm_predictions_are_identical_to_plain_svc():
    rng = np.random.default_rng(0)
    xtr, ytr, xte, yte = blobs(n=800, classes=5, dim=8, seed=2)
    xtr = xtr + rng.normal(0, 6, xtr.shape).astype(np.float32)
    xte = xte + rng.normal(0, 6, xte.shape).astype(np.float32)
    gram = SharedRBFGram(xtr, xte)
    fast = SVC(kernel="precomputed").fit(gram.train, ytr).predict(gram.test)
    plain = make_pipeline(StandardScaler(), SVC()).fit(xtr, ytr).predict(xte)
    np.testing.assert_array_equal(fast, plain)
    assert 0.3 < (plain == yte).mean() < 0.99  # a case with real decision boundaries


def test_svm_falls_back_to_the_pipeline_over_the_memory_budget():
    data = array_set(*blobs(classes=3))
    fast = run_probes([data], ProbeConfig(classifiers=("svm",)))
    plain = run_probes([data], ProbeConfig(classifiers=("svm",), svm_memory_gb=0.0))
    assert "[shared Gram]" in fast[0]["params"] and "[shared Gram]" not in plain[0]["params"]
    assert fast[0]["accuracy"] == plain[0]["accuracy"]


@pytest.mark.parametrize("name", ["dt", "svm", "logreg"])
def test_tuning_never_touches_the_test_split(name):
    xtr, ytr, xte, yte = blobs(classes=3, seed=4)
    config = ProbeConfig(classifiers=(name,), tune=True)
    clean = run_probes([array_set(xtr, ytr, xte, yte)], config)
    rng = np.random.default_rng(9)
    poisoned = run_probes([array_set(xtr, ytr, rng.normal(0, 100, xte.shape).astype(np.float32),
                                     rng.permutation(yte))], config)
    assert clean[0]["tuned"] and clean[0]["tuned"] == poisoned[0]["tuned"]


def test_seeds_repeat_random_probes_and_report_each():
    data = array_set(*blobs(classes=3))
    rows = run_probes([data], ProbeConfig(classifiers=("dt", "knn"), seeds=(0, 1, 2), jobs=2))
    assert sorted((r["classifier"], r["seed"]) for r in rows) == sorted(
        [(c, s) for c in ("dt", "knn") for s in (0, 1, 2)])
    again = run_probes([data], ProbeConfig(classifiers=("dt", "knn"), seeds=(0, 1, 2), jobs=1))
    key = lambda r: (r["classifier"], r["seed"])  # noqa: E731
    assert [r["accuracy"] for r in sorted(rows, key=key)] == [r["accuracy"] for r in sorted(again, key=key)]


def test_unknown_classifier_is_rejected_with_the_list():
    with pytest.raises(InvalidChoiceError, match="unknown probe 'rf'; choose from: dt, knn, knn-cosine, linsvm, logreg, svm"):
        parse_classifiers("dt,rf")


# ---- plots and outputs ----------------------------------------------------------------------


def test_maps_have_the_grid_shape_and_colour_the_right_classes(tmp_path):
    xtr, ytr, xte, yte = blobs(n=400, classes=3)
    y2 = (xte[:, 0] > np.median(xte[:, 0])).astype(int)
    a = array_set(xtr, np.c_[ytr, ytr % 2], xte, np.c_[yte, y2], name="A", num_classes=3)
    b = array_set(xtr * 2, np.c_[ytr, ytr % 2], xte * 2, np.c_[yte, y2], name="B", num_classes=3)
    coords = embedding_maps([a, b], tmp_path, max_points=150, seed=0)
    saved = np.load(tmp_path / "coords.npz")
    assert list(saved["encoders"]) == ["A", "B"] and list(saved["tasks"]) == ["t0", "t1"]
    assert saved["coords/A"].shape == (150, 2)
    np.testing.assert_array_equal(saved["labels"], a.test.labels[saved["indices"]])
    # The map keeps the classes apart: 5-NN in 2-D recovers the blob labels.
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.model_selection import cross_val_score
    assert cross_val_score(KNeighborsClassifier(5), coords["A"], saved["labels"][:, 0], cv=3).mean() > 0.9
    import matplotlib.image as mpimg
    assert mpimg.imread(tmp_path / "tsne.png").shape[0] > 100 and (tmp_path / "tsne.svg").stat().st_size > 1000


def test_probe_command_writes_results_with_provenance(checkpoint, tmp_path, capsys):
    out = tmp_path / "probe"
    code = main(["probe", str(checkpoint), str(checkpoint), "--classifiers", "knn,dt", "--seeds", "0,1",
                 "--tsne", "--max-points", "60", "--out", str(out), "--no-progress", "--device", "cpu",
                 "--universality", "--n-random", "3"])
    assert code == 0, capsys.readouterr().err
    result = json.loads((out / "probe.json").read_text())
    rows = result["rows"]
    assert len(rows) == 2 * 3 * 2 * 2  # encoders x tasks x classifiers x seeds
    assert {r["checkpoint"] for r in rows} == {checkpoint.parent.name, f"{checkpoint.parent.name} (2)"}
    assert all(r["repeval_version"] and r["checkpoint_hash"] for r in rows)
    assert result["provenance"]["config"]["classifiers"] == ["knn", "dt"]
    assert (out / "probe.csv").read_text().count("\n") == len(rows) + 1
    for name in ("tsne.png", "tsne.svg", "coords.npz", "probe_bars.png"):
        assert (out / name).exists(), name
    universality = json.loads((out / "universality.json").read_text())
    assert len(universality["rows"]) == 2 * 3 and all(len(r["random_heads"]) == 3 for r in universality["rows"])


@pytest.mark.parametrize(("args", "message"), [
    (["probe", "x.pt"], "checkpoint 'x.pt' does not exist"),
    (["probe"], "give at least one checkpoint"),
    (["probe", "--timm", "test_resnet"], "--timm needs --dataset"),
    (["probe", "--timm", "test_resnet", "--dataset", "multidigits", "--classifiers", "rf"], "unknown probe 'rf'"),
    (["probe", "--timm", "test_resnet", "--dataset", "multidigits", "--seeds", "a"], "--seeds must be a comma list"),
    (["tsne", "x.pt", "--method", "pca"], "'method' parameter of repeval tsne must be one of 'tsne', 'umap'"),
])
def test_probe_bad_input(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1



def test_blocked_rbf_gram_equals_the_direct_formula():
    from repeval.probes.svm import rbf_gram

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(23, 5)), rng.normal(size=(11, 5))
    direct = np.exp(-0.3 * ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(rbf_gram(a, b, 0.3, block_rows=4), direct, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(rbf_gram(a, b, 0.3), direct, rtol=1e-12, atol=1e-15)
    square = np.exp(-0.3 * ((a[:, None, :] - a[None, :, :]) ** 2).sum(-1))
    for rows in (4, 5, 23, 100):  # the symmetric path (a is b) mirrors blocks below the diagonal
        np.testing.assert_allclose(rbf_gram(a, a, 0.3, block_rows=rows), square, rtol=1e-12, atol=1e-15)
