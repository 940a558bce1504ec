from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from repeval.app.cli import main
from repeval.errors import InvalidChoiceError
from repeval.probes.universality import (
    UniversalityMeasure, best_permutation, brute_force_permutation, evaluate_head, gradient_norm, head_logits,
    init_head, matching_cost,
)


@pytest.mark.parametrize("n_classes", [2, 3, 4, 5, 6, 7])
def test_hungarian_equals_brute_force(n_classes):
    rng = np.random.default_rng(n_classes)
    for _ in range(5):
        cost = rng.exponential(1.0, (n_classes, n_classes))
        fast, slow = best_permutation(cost), brute_force_permutation(cost)
        idx = np.arange(n_classes)
        assert cost[idx, fast].sum() == pytest.approx(cost[idx, slow].sum(), rel=1e-12)


def test_matching_cost_is_the_permuted_cross_entropy():
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(50, 4)))
    y = rng.integers(0, 4, 50)
    cost = matching_cost(F.log_softmax(logits, 1).numpy(), y, 4)
    sigma = rng.permutation(4)
    direct = F.cross_entropy(logits, torch.from_numpy(sigma[y]), reduction="sum").item()
    assert cost[np.arange(4), sigma].sum() == pytest.approx(direct, rel=1e-12)


def test_a_permuted_perfect_head_is_matched_back_exactly():
    """Logits that are a known permutation of a (near) perfect predictor's: the permutation is
    recovered and the matched loss equals the unpermuted loss."""
    rng = np.random.default_rng(1)
    n, c = 300, 5
    y = rng.integers(0, c, n)
    z = np.eye(c)[y] * 8.0 + rng.normal(0, 0.5, (n, c))  # a good "head output" already
    sigma = rng.permutation(c)
    w_perfect = torch.eye(c, dtype=torch.float64)
    w_permuted = w_perfect[np.argsort(sigma)]  # output unit sigma(k) carries class k's score
    zt = torch.from_numpy(z)
    perfect = evaluate_head(zt, y, [w_perfect, torch.zeros(c, dtype=torch.float64)], c)
    permuted = evaluate_head(zt, y, [w_permuted, torch.zeros(c, dtype=torch.float64)], c)
    assert permuted["permutation"] == sigma.tolist()
    assert permuted["matched_loss"] == pytest.approx(perfect["unmatched_loss"], rel=1e-12)
    assert permuted["unmatched_loss"] > perfect["unmatched_loss"] + 1.0
    assert permuted["matched_accuracy"] == perfect["matched_accuracy"] > 0.95


def informative(seed=0, n=600, d=16, c=4):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    return rng.normal(0, 3, (c, d))[y] + rng.normal(0, 1, (n, d)), y


def spread_and_hidden(seed=0, n=600, d=16, c=4):
    """Two embeddings the optimal head separates equally well: class signal spread over every
    dimension, or hidden in one dimension among unit-variance noise (standardised alike)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    spread = rng.normal(0, 3, (c, d))[y] + rng.normal(0, 1, (n, d))
    hidden = rng.normal(0, 1, (n, d))
    hidden[:, 0] = 6.0 * y + rng.normal(0, 0.3, n)
    return spread, hidden, y


# Random MLP heads (PyTorch's default init) have small logits, so their gaps differ less.
@pytest.mark.parametrize(("head", "margin"), [("linear", 0.2), ("mlp", 0.05)])
def test_information_a_random_head_cannot_see_gives_a_larger_gap(head, margin):
    spread, hidden, y = spread_and_hidden()
    kw = dict(n_random=8, head=head, hidden=16, standardize=True, tol=1e-3, max_iter=300, optimal="train-fit")
    s = UniversalityMeasure(**kw).fit(spread, y)
    h = UniversalityMeasure(**kw).fit(hidden, y)
    assert s.optimal_["loss"] < 0.05 and h.optimal_["loss"] < 0.05  # both fully informative to psi*
    assert h.gap_mean_ > s.gap_mean_ + margin
    assert s.universality_ > h.universality_


def test_embeddings_without_label_information_have_a_small_gap_and_a_bad_optimum():
    """Definition 2 rewards closeness of an arbitrary head to the best one, not the quality of
    the best one: with no label information psi* cannot beat the class prior, random heads get
    about as close, and the gap is small. Reports therefore pair the gap with the optimal loss."""
    spread, _, y = spread_and_hidden()
    noise = np.random.default_rng(1).normal(0, 1, spread.shape)
    kw = dict(n_random=8, standardize=True)
    informative = UniversalityMeasure(**kw).fit(spread, y)
    uninformative = UniversalityMeasure(**kw).fit(noise, y)
    prior_entropy = -sum(p * np.log(p) for p in np.bincount(y) / len(y))
    assert uninformative.optimal_["loss"] > 0.9 * prior_entropy > informative.optimal_["loss"] + 1.0
    assert uninformative.gap_mean_ < informative.gap_mean_


# The convex linear head reaches a tight tolerance; L-BFGS on a ReLU MLP stalls at kinks sooner.
@pytest.mark.parametrize(("head", "tol"), [("linear", 1e-6), ("mlp", 1e-2)])
def test_optimal_head_converges_and_beats_every_random_head(head, tol):
    good, y = informative(n=300)
    y = np.where(np.random.default_rng(3).random(len(y)) < 0.15, (y + 1) % 4, y)  # no separable data: a finite optimum
    m = UniversalityMeasure(n_random=8, head=head, hidden=8, tol=tol, max_iter=2000, standardize=True,
                            optimal="train-fit").fit(good, y)
    assert m.optimal_["converged"] and m.optimal_["grad_norm"] <= tol
    assert all(m.optimal_["loss"] <= r["matched_loss"] for r in m.random_)
    assert all(r["gap"] > 0 for r in m.random_)


def test_a_stalled_fit_is_reported_not_converged():
    good, y = informative(n=300)
    y = np.where(np.random.default_rng(3).random(len(y)) < 0.15, (y + 1) % 4, y)
    m = UniversalityMeasure(n_random=1, head="mlp", hidden=8, tol=1e-9, max_iter=100_000, standardize=True,
                            optimal="train-fit").fit(good, y)
    assert not m.optimal_["converged"] and m.optimal_["grad_norm"] > 1e-9
    assert m.optimal_["n_iter"] < 100_000  # stopped when L-BFGS stopped moving


def test_proxy_matches_finite_differences_in_float64():
    rng = np.random.default_rng(2)
    z = torch.from_numpy(rng.normal(size=(20, 5)))
    y = torch.from_numpy(rng.integers(0, 3, 20))
    params = init_head("mlp", 5, 4, 3, seed=0)
    flat = torch.cat([p.flatten() for p in params])

    def loss(vec):
        parts, start = [], 0
        for p in params:
            parts.append(vec[start : start + p.numel()].view_as(p))
            start += p.numel()
        return F.cross_entropy(head_logits(z, parts), y, reduction="sum").item()

    eps, grad = 1e-6, torch.zeros_like(flat)
    for i in range(len(flat)):
        e = torch.zeros_like(flat)
        e[i] = eps
        grad[i] = (loss(flat + e) - loss(flat - e)) / (2 * eps)
    assert gradient_norm(z, y, params, reduction="sum") == pytest.approx(grad.norm().item(), rel=1e-6)


def test_test_split_uses_the_training_permutation():
    good, y = informative()
    m = UniversalityMeasure(n_random=4, restarts=1).fit(good[:400], y[:400], good[400:], y[400:])
    for train_head, test_head in zip(m.random_, m.test_["random"]):
        assert test_head["permutation"] == train_head["permutation"]
    assert math.isfinite(m.test_["gap_mean"])


def test_random_heads_are_seeded():
    good, y = informative(n=200)
    a = UniversalityMeasure(n_random=3, random_state=5).fit(good, y)
    b = UniversalityMeasure(n_random=3, random_state=5).fit(good, y)
    c = UniversalityMeasure(n_random=3, random_state=6).fit(good, y)
    assert [r["matched_loss"] for r in a.random_] == [r["matched_loss"] for r in b.random_]
    assert [r["matched_loss"] for r in a.random_] != [r["matched_loss"] for r in c.random_]


def test_standardize_removes_the_embedding_scale():
    good, y = informative(n=300)
    small = UniversalityMeasure(n_random=4, standardize=True).fit(good, y)
    large = UniversalityMeasure(n_random=4, standardize=True).fit(good * 100, y)
    raw_large = UniversalityMeasure(n_random=4).fit(good * 100, y)
    assert large.gap_mean_ == pytest.approx(small.gap_mean_, rel=1e-6)
    assert raw_large.gap_mean_ > 5 * small.gap_mean_  # random logits grow with ||z||


def test_parameters_are_validated_in_fit():
    with pytest.raises(InvalidChoiceError, match="'head' parameter of UniversalityMeasure must be one of 'linear', 'mlp', 'trained'. Got 'rbf'"):
        UniversalityMeasure(head="rbf").fit(np.zeros((4, 2)), np.array([0, 1, 0, 1]))
    with pytest.raises(InvalidChoiceError, match="'n_random' parameter of UniversalityMeasure must be an int >= 1. Got 0"):
        UniversalityMeasure(n_random=0).fit(np.zeros((4, 2)), np.array([0, 1, 0, 1]))
    m = UniversalityMeasure(n_random=0)
    assert m.get_params()["n_random"] == 0  # the constructor only stores (scikit-learn contract)


def test_universality_command_on_a_checkpoint(tmp_path, capsys):
    from repeval.training.config import TrainConfig
    from repeval.training.dgr import DGRConfig
    from repeval.training.loop import train
    import json

    run_dir = train(TrainConfig(dataset_args=dict(n_train=256, n_test=96), epochs=1, progress=False,
                                out_dir=str(tmp_path / "runs"), dgr=DGRConfig(dummies=2)))
    out = tmp_path / "u"
    assert main(["universality", str(run_dir), "--n-random", "4", "--out", str(out), "--device", "cpu"]) == 0
    result = json.loads((out / "universality.json").read_text())
    rows = result["rows"]
    assert [r["task"] for r in rows] == ["left", "right", "sum"]
    for r in rows:
        assert len(r["random_heads"]) == 4 and len(r["stored_dummy_heads"]) == 2
        assert r["gap_mean"] == pytest.approx(r["matched_loss_mean"] - r["optimal_loss"])
        assert r["universality"] == pytest.approx(1 / r["gap_mean"])
        assert sorted(r["random_heads"][0]["permutation"]) == list(range({"left": 10, "right": 10, "sum": 19}[r["task"]]))
    assert result["provenance"]["config"]["head"] == "linear"
    assert (out / "universality.csv").read_text().count("\n") == 4
    capsys.readouterr()
    assert main(["universality", str(run_dir), "--head", "trained", "--n-random", "3", "--out", str(out)]) == 0
    trained = json.loads((out / "universality.json").read_text())["rows"][0]
    assert trained["optimal"]["head"] == "trained" and trained["optimal"]["n_iter"] == 0


def test_separable_embeddings_are_flagged_and_an_l2_penalty_keeps_the_optimum_finite():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    separable = rng.normal(size=(300, 6)) * 0.3 + 4.0 * np.eye(3, 6)[y]  # classes far apart
    overlapping = rng.normal(size=(300, 6)) + 0.3 * np.eye(3, 6)[y]
    free = UniversalityMeasure(n_random=3, optimal="train-fit").fit(separable, y)
    assert free.separable_ and free.optimal_["accuracy"] == 1.0 and free.optimal_["loss"] < 1e-2
    assert not UniversalityMeasure(n_random=3, optimal="train-fit").fit(overlapping, y).separable_

    penalised = UniversalityMeasure(n_random=3, l2=1e-2, optimal="train-fit").fit(separable, y)
    assert penalised.optimal_["l2"] == 1e-2 and penalised.optimal_["converged"]
    assert penalised.optimal_["weight_norm"] < free.optimal_["weight_norm"]
    assert penalised.optimal_["loss"] > free.optimal_["loss"]  # the plain loss of a smaller head
    # At the penalised optimum the gradient of CE + (l2/2)||W||^2 vanishes: dCE/dW = -l2 W.
    z = torch.from_numpy(separable)
    w, b = [p.detach().requires_grad_(True) for p in penalised.optimal_head_]
    grad_w, = torch.autograd.grad(torch.nn.functional.cross_entropy(z @ w.T + b, torch.from_numpy(y)), w)
    torch.testing.assert_close(grad_w, -1e-2 * w.detach(), rtol=0, atol=2e-4)
    with pytest.raises(InvalidChoiceError, match="'l2' parameter of UniversalityMeasure must be a finite float >= 0.0"):
        UniversalityMeasure(l2=-1.0, optimal="train-fit").fit(separable, y)
