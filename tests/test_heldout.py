"""The held-out reading's machinery: folds, the batched fits against one-at-a-time fits, the
grid record and its edge warning, options, and universality.json's formats."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from repeval.errors import InvalidChoiceError
from repeval.probes import heldout
from repeval.probes.universality import UniversalityMeasure
from repeval.probes.universality_report import UNIVERSALITY_FORMAT, read_universality


def blobs(n=400, d=12, c=3, noise=1.5, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    return rng.normal(0, 1, (c, d))[y] + rng.normal(0, noise, (n, d)) + 3.0, y


def test_folds_partition_the_samples_and_keep_groups_whole():
    _, y = blobs(n=300)
    masks = heldout.fold_masks(y, 5, seed=0)
    assert ((~masks).sum(0) == 1).all()  # every sample validates exactly one fold
    groups = np.repeat(np.arange(30), 10)
    grouped = heldout.fold_masks(y, 5, seed=0, groups=groups)
    for fold in ~grouped:
        validated = set(groups[fold])
        assert not validated & set(groups[~fold])  # no group on both sides


def test_batched_linear_fits_equal_each_fold_fitted_alone():
    x, y = blobs()
    z, yt = torch.from_numpy(x), torch.from_numpy(y)
    masks = heldout.fold_masks(y, 4, seed=1)
    fit = heldout.fit_linear_heldout(z, yt, 3, (0.1,), masks, tol=1e-6)
    zs = (z - z.mean(0)) / z.std(0)
    for f, expected in enumerate(fit.fold_losses):
        train, val = torch.from_numpy(masks[f]), torch.from_numpy(~masks[f])
        w, b = heldout._refit_linear(zs[train], yt[train], 3, 0.1, torch.zeros(12, 3), torch.zeros(3), 1e-7, 2000)
        alone = torch.nn.functional.cross_entropy(zs[val] @ w.T + b, yt[val]).item()
        assert expected == pytest.approx(alone, abs=2e-4)


def test_stacked_mlp_training_equals_each_model_trained_alone():
    x, y = blobs(n=200)
    z, yt = torch.from_numpy(x).float(), torch.from_numpy(y)
    masks = torch.from_numpy(heldout.fold_masks(y, 2, seed=0).T).float()
    l2 = torch.tensor([1e-2, 1e-3])
    stacked = [p.requires_grad_(True) for p in heldout._mlp_init(2, 12, 8, 3, seed=4)]
    heldout._train_mlps(z, yt, stacked, l2, masks, 2, 64, 1e-2, seed=7)
    for m in range(2):
        init = heldout._mlp_init(2, 12, 8, 3, seed=4)
        alone = [t.detach().clone().requires_grad_(True) for t in (init[0][:, m:m + 1], *(p[m:m + 1] for p in init[1:]))]
        heldout._train_mlps(z, yt, alone, l2[m:m + 1], masks[:, m:m + 1], 2, 64, 1e-2, seed=7)
        torch.testing.assert_close(alone[0][:, 0], stacked[0][:, m].detach(), rtol=1e-4, atol=1e-5)
        for a, s in zip(alone[1:], stacked[1:]):
            torch.testing.assert_close(a[0], s[m].detach(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_the_choice_is_the_grid_point_with_the_lowest_cv_loss(head):
    x, y = blobs()
    m = UniversalityMeasure(n_random=2, head=head, hidden=8, cv=3).fit(x[:300], y[:300], x[300:], y[300:])
    grid = [g for g in m.optimal_["grid"] if g["evaluated"]]
    best = min(grid, key=lambda g: g["cv_loss"])
    assert m.optimal_["l2"] == best["l2"] and m.optimal_["cv_loss"] == pytest.approx(best["cv_loss"])
    assert len(best["fold_losses"]) == 3 and m.optimal_["loss_source"] == "test"
    # Scored on the test split; the random heads on the same samples.
    with torch.no_grad():
        from repeval.probes.universality import head_logits
        test_loss = torch.nn.functional.cross_entropy(head_logits(torch.from_numpy(x[300:]), m.optimal_head_),
                                                      torch.from_numpy(y[300:])).item()
    assert m.optimal_["loss"] == pytest.approx(test_loss, rel=1e-12)
    low, high = m.gap_ci_
    assert low < m.gap_mean_ < high and m.gap_fold_std_ > 0


def test_a_choice_on_the_grid_edge_is_recorded_and_warned():
    x, y = blobs()
    with pytest.warns(UserWarning, match="grid's edge"):
        m = UniversalityMeasure(n_random=2, l2_grid=(1e3, 1e2)).fit(x, y)
    assert m.optimal_["edge"] == "weakest"  # both points over-regularise: the weaker one wins
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert UniversalityMeasure(n_random=2, l2_grid=(1e2, 1e-2, 1e-6)).fit(x, y).optimal_["edge"] is None


def test_without_a_test_split_the_gap_is_random_training_loss_minus_cv_loss():
    x, y = blobs()
    m = UniversalityMeasure(n_random=3).fit(x, y)
    assert m.optimal_["loss_source"] == "cv" and m.optimal_["loss"] == m.optimal_["cv_loss"]
    for r in m.random_:
        assert r["gap"] == pytest.approx(r["matched_loss"] - m.optimal_["cv_loss"], rel=1e-12)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(optimal="best"), "The 'optimal' parameter of UniversalityMeasure must be one of 'held-out', 'train-fit'. Got 'best'"),
    (dict(cv=1), "The 'cv' parameter of UniversalityMeasure must be an int >= 2. Got 1"),
    (dict(l2_grid=()), "The 'l2_grid' parameter of UniversalityMeasure must be a non-empty list"),
    (dict(l2_grid=(1.0, -1.0)), "The 'l2_grid' parameter of UniversalityMeasure must be a finite float >= 0.0. Got -1.0"),
    (dict(l2=0.1), "the held-out reading chooses it from 'l2_grid'. Got l2=0.1 with optimal='held-out'"),
    (dict(max_epochs=0), "The 'max_epochs' parameter of UniversalityMeasure must be an int >= 1. Got 0"),
])
def test_bad_options_are_refused_in_one_line(kwargs, message):
    with pytest.raises(InvalidChoiceError, match=message.replace("(", r"\(").replace(")", r"\)")):
        UniversalityMeasure(**kwargs).fit(np.zeros((10, 2)), np.arange(10) % 2)


def test_more_folds_than_samples_or_images_is_refused_in_one_line():
    with pytest.raises(InvalidChoiceError, match=r"must be <= the number of training samples \(4\). Got 5 instead"):
        UniversalityMeasure(n_random=2).fit(np.zeros((4, 2)), np.array([0, 1, 0, 1]))
    with pytest.raises(InvalidChoiceError, match=r"must be <= the number of groups \(images\) \(3\). Got 5 instead"):
        UniversalityMeasure(n_random=2).fit(np.zeros((30, 2)), np.arange(30) % 2, groups=np.arange(30) % 3)


@pytest.mark.parametrize(("args", "message"), [
    (["--optimal", "best"], "must be one of 'held-out', 'train-fit'. Got 'best'"),
    (["--l2-grid", "1,x"], "--l2-grid must be a comma list of numbers; got '1,x'"),
    (["--cv", "1"], "The 'cv' parameter of UniversalityMeasure must be an int >= 2. Got 1"),
])
def test_the_cli_refuses_bad_universality_options_before_creating_anything(tmp_path, capsys, args, message):
    from repeval.app.cli import main

    out = tmp_path / "u"
    assert main(["universality", "x.pt", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_universality_files_of_format_1_load_and_newer_ones_are_refused(tmp_path):
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"repeval_version": "0.9", "rows": [{"task": "t", "gap_mean": 1.0}]}))
    data = read_universality(old)
    assert data["rows"][0]["optimal_reading"] == "train-fit" and data["format"] == UNIVERSALITY_FORMAT
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"format": UNIVERSALITY_FORMAT + 1, "repeval_version": "9.0", "rows": []}))
    with pytest.raises(InvalidChoiceError, match=f"format {UNIVERSALITY_FORMAT + 1} .*newer than this repeval reads"):
        read_universality(new)
