import torch

from repeval.training.methods.cagrad import CAGrad, cagrad_direction, project_to_simplex
from tests.methods._asserts import assert_finite_under_scaling, assert_same_for_same_seed, random_grads


def test_c_zero_is_the_mean_direction():
    g = random_grads()
    torch.testing.assert_close(cagrad_direction(g, c=0.0), g.mean(0), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(CAGrad(3, c=0.0).aggregate(g), g.sum(0), rtol=1e-12, atol=1e-12)


def test_distance_from_the_mean_is_c_times_its_norm():
    g = random_grads(seed=2)
    for c in (0.2, 0.4, 1.0):
        d = cagrad_direction(g, c=c)
        g0 = g.mean(0)
        torch.testing.assert_close((d - g0).norm(), c * g0.norm(), rtol=1e-9, atol=0)


def test_dual_solution_beats_random_simplex_points():
    g = random_grads(k=4, seed=5)
    gram, c = g @ g.T, 0.4
    b = torch.full((4,), 0.25, dtype=torch.float64)
    radius = c * (b @ g).norm()
    objective = lambda w: w @ gram @ b + radius * torch.sqrt(w @ gram @ w)  # noqa: E731
    d = cagrad_direction(g, c)
    w_star = torch.linalg.lstsq(g.T, (d - b @ g)[:, None]).solution[:, 0]
    w_star = w_star / w_star.sum()
    for seed in range(200):
        w = project_to_simplex(torch.rand(4, dtype=torch.float64, generator=torch.Generator().manual_seed(seed)))
        assert objective(w_star) <= objective(w) + 1e-6


def test_scaling_and_seeds():
    assert_finite_under_scaling(CAGrad(3).aggregate, random_grads())
    assert_same_for_same_seed(lambda: CAGrad(3), random_grads())
