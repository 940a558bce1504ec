import torch

from repeval.training.methods.imtl import IMTL, imtl_g_weights
from tests.methods._asserts import assert_finite_under_scaling, assert_same_for_same_seed, random_grads


def test_equal_projections_onto_every_unit_gradient():
    for seed in range(5):
        g = random_grads(k=4, p=9, seed=seed)
        a = imtl_g_weights(g @ g.T)
        d = a @ g
        projections = (g / g.norm(dim=1, keepdim=True)) @ d
        torch.testing.assert_close(projections, projections[0].expand(4), rtol=1e-8, atol=1e-10)
        assert abs(float(a.sum()) - 1) < 1e-12


def test_permutation_invariant():
    g = random_grads(k=3, seed=1)
    perm = torch.tensor([2, 0, 1])
    torch.testing.assert_close(IMTL(3).aggregate(g[perm]), IMTL(3).aggregate(g), rtol=1e-9, atol=1e-12)


def test_singular_cases_do_not_crash():
    g = random_grads(k=3, seed=2)
    for bad in (torch.stack([g[0], g[0], g[1]]), torch.stack([g[0], torch.zeros_like(g[0]), g[1]])):
        assert torch.isfinite(IMTL(3).aggregate(bad)).all()


def test_loss_scale_optimum():
    method = IMTL(2)
    losses = torch.tensor([0.5, 2.0])
    with torch.no_grad():
        method.log_scale.copy_(-torch.log(losses))  # d/ds (e^s L - s) = e^s L - 1 = 0
    (grad,) = torch.autograd.grad(method.task_losses(losses, torch.ones(len(losses), dtype=torch.bool)).sum(), method.log_scale)
    torch.testing.assert_close(grad, torch.zeros(2), rtol=0, atol=1e-6)


def test_scaling_and_seeds():
    assert_finite_under_scaling(IMTL(3).aggregate, random_grads())
    assert_same_for_same_seed(lambda: IMTL(3), random_grads())
