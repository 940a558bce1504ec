import torch

from repeval.training.methods.nash import NashMTL, nash_weights
from tests.methods._asserts import assert_finite_under_scaling, assert_same_for_same_seed, random_grads


def test_bargaining_condition():
    for seed in range(5):
        g = random_grads(k=3, p=8, seed=seed)
        gram = g @ g.T
        a = nash_weights(gram)
        m = gram / gram.norm()
        assert (a > 0).all()
        torch.testing.assert_close(a * (m @ a), torch.ones(3, dtype=torch.float64), rtol=1e-6, atol=1e-6)


def test_update_is_clipped_to_max_norm():
    g = random_grads(seed=3) * 100
    assert NashMTL(3, max_norm=1.0).aggregate(g).norm() <= 1.0 + 1e-12


def test_scaling_and_seeds():
    assert_finite_under_scaling(NashMTL(3).aggregate, random_grads())
    assert_same_for_same_seed(lambda: NashMTL(3), random_grads())
