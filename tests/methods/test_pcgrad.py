import torch

from repeval.training.methods.pcgrad import PCGrad, pcgrad
from tests.methods._asserts import assert_finite_under_scaling, assert_same_for_same_seed, random_grads


def test_conflicting_pair_leaves_no_conflict():
    g = torch.tensor([[1.0, 0.0], [-1.0, 1.0]], dtype=torch.float64)
    d = pcgrad(g, torch.Generator().manual_seed(0))
    g1p = g[0] - (g[0] @ g[1]) / (g[1] @ g[1]) * g[1]
    g2p = g[1] - (g[1] @ g[0]) / (g[0] @ g[0]) * g[0]
    torch.testing.assert_close(d, g1p + g2p, rtol=1e-12, atol=1e-12)
    assert abs(float(g1p @ g[1])) < 1e-12 and abs(float(g2p @ g[0])) < 1e-12
    assert (g @ d >= -1e-12).all()


def test_agreeing_gradients_are_summed():
    g = torch.tensor([[1.0, 0.5], [0.5, 1.0], [1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(pcgrad(g, torch.Generator().manual_seed(0)), g.sum(0), rtol=0, atol=0)


def test_projects_against_original_gradients():
    g = random_grads(k=4, seed=3)
    d = pcgrad(g, torch.Generator().manual_seed(1))
    # every projected row only ever removed components along *original* rows: d - sum(g) is in their span
    residual = d - g.sum(0)
    coef = torch.linalg.lstsq(g.T, residual[:, None]).solution
    torch.testing.assert_close(g.T @ coef[:, 0], residual, rtol=1e-9, atol=1e-9)


def test_scaling_and_seeds():
    assert_finite_under_scaling(lambda g: pcgrad(g, torch.Generator().manual_seed(0)), random_grads())
    assert_same_for_same_seed(lambda: PCGrad(3, seed=4), random_grads())
