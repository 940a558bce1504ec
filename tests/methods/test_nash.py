"""Nash-MTL against the original's condition: a > 0 with (G G^T) a = 1/a on the *raw* Gram
matrix, found here by an independent solver (scipy's least squares on log a), and the clipped
update's norm min(sqrt(K), max_norm) at every gradient scale, which the normalised-Gram solve
of earlier versions missed below a Gram norm of 1."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import least_squares

from repeval.training.methods.nash import NashMTL, nash_weights
from tests.methods._asserts import assert_finite_under_scaling, assert_same_for_same_seed, random_grads

SCALES = (1e-4, 1e-2, 1.0, 1e2)


def independent_alpha(gram: np.ndarray) -> np.ndarray:
    """The bargaining solution by a different route: log a with M a - 1/a = 0, in float64."""
    residual = lambda log_a: (gram @ np.exp(log_a)) * np.exp(log_a) - 1  # noqa: E731  (a_k (M a)_k = 1)
    start = np.full(len(gram), -0.5 * math.log(np.abs(gram).max()))
    return np.exp(least_squares(residual, start, xtol=1e-15, ftol=1e-15, gtol=1e-15).x)


@pytest.mark.parametrize("k", [2, 3, 4, 5])
@pytest.mark.parametrize("scale", SCALES)
def test_weights_satisfy_the_raw_bargaining_condition_at_every_scale(k, scale):
    g = random_grads(k=k, p=12, seed=k) * scale
    gram = g @ g.T
    a = nash_weights(gram)
    assert (a > 0).all()
    torch.testing.assert_close(a * (gram @ a), torch.ones(k, dtype=torch.float64), rtol=0, atol=1e-8)
    np.testing.assert_allclose(a.numpy(), independent_alpha(gram.numpy()), rtol=1e-6)


@pytest.mark.parametrize("max_norm", [1.0, 10.0])
@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("scale", SCALES)
def test_update_norm_is_min_of_sqrt_k_and_max_norm_at_every_scale(scale, k, max_norm):
    g = random_grads(k=k, p=12, seed=10 + k) * scale
    update = NashMTL(k, max_norm=max_norm).aggregate(g)
    assert float(update.norm()) == pytest.approx(min(math.sqrt(k), max_norm), rel=1e-8)
    # The direction is the original's: sum_k a_k g_k with the independent a.
    a = torch.from_numpy(independent_alpha((g @ g.T).numpy()))
    reference = a @ g
    torch.testing.assert_close(update / update.norm(), reference / reference.norm(), rtol=0, atol=1e-6)


def test_warm_start_keeps_the_raw_scale_across_steps():
    method = NashMTL(3)
    for scale in (1e-3, 1.0, 1e-3):  # the last solve starts from the previous step's weights
        g = random_grads(k=3, p=9, seed=4) * scale
        update = method.aggregate(g)
        assert float(update.norm()) == pytest.approx(1.0, rel=1e-8)
        torch.testing.assert_close(method.alpha * ((g @ g.T) @ method.alpha), torch.ones(3, dtype=torch.float64),
                                   rtol=0, atol=1e-8)


def test_scaling_and_seeds():
    assert_finite_under_scaling(NashMTL(3).aggregate, random_grads())
    assert_same_for_same_seed(lambda: NashMTL(3), random_grads())
