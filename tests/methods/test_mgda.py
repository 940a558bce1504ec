import itertools

import torch

from repeval.training.methods.mgda import MGDA, min_norm_weights
from tests.methods._asserts import assert_finite_under_scaling, assert_same_for_same_seed, random_grads


def test_min_norm_optimality_conditions():
    for seed in range(5):
        g = random_grads(k=4, p=6, seed=seed)
        w = min_norm_weights(g @ g.T)
        d = w @ g
        assert (w >= 0).all() and abs(float(w.sum()) - 1) < 1e-12
        assert (g @ d >= d @ d - 1e-9).all()  # KKT: d . g_k >= ||d||^2


def test_beats_a_grid_over_the_simplex():
    g = random_grads(k=3, p=5, seed=7)
    gram = g @ g.T
    best = min_norm_weights(gram) @ gram @ min_norm_weights(gram)
    for a, b in itertools.product(torch.linspace(0, 1, 41), repeat=2):
        if a + b <= 1:
            w = torch.tensor([a, b, 1 - a - b], dtype=torch.float64)
            assert best <= w @ gram @ w + 1e-12


def test_two_tasks_closed_form_and_opposite_gradients():
    g = torch.tensor([[2.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    w = min_norm_weights(g @ g.T)
    alpha = float(((g[1] - g[0]) @ g[1]) / ((g[0] - g[1]) @ (g[0] - g[1])))
    torch.testing.assert_close(w, torch.tensor([alpha, 1 - alpha], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    opposite = torch.tensor([[1.0, 2.0], [-1.0, -2.0]], dtype=torch.float64)
    assert MGDA(2).aggregate(opposite).abs().max() < 1e-12


def test_scaling_and_seeds():
    assert_finite_under_scaling(MGDA(3).aggregate, random_grads())
    assert_same_for_same_seed(lambda: MGDA(3), random_grads())
