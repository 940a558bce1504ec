"""GradNorm: weights sum to K, the balancing loss drives w_k ||g_k|| to the common target,
and a task that trains slower (larger loss ratio) gets a larger target."""

import torch

from repeval.training.methods import GradNorm


def descend(method, losses, norms, steps=6000, lr=0.001):
    opt = torch.optim.SGD(method.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        method.gradnorm_loss(losses, norms).backward()
        opt.step()
        with torch.no_grad():
            method.scalars.mul_(len(norms) / method.scalars.sum())
    return method.scalars.detach()


def test_equal_training_rates_equalise_weighted_gradient_norms():
    method = GradNorm(3)
    method.initial_losses = torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64)
    method.scalars = method.scalars.detach().double().requires_grad_(True)
    norms = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    w = descend(method, method.initial_losses * 0.5, norms)  # every ratio is 0.5: r_k = 1
    torch.testing.assert_close(w.sum(), torch.tensor(3.0, dtype=torch.float64), rtol=0, atol=1e-9)
    weighted = w * norms
    torch.testing.assert_close(weighted, weighted.mean().expand(3), rtol=0.01, atol=0)


def test_slower_task_gets_more_gradient_with_alpha():
    method = GradNorm(2, alpha=1.5)
    method.initial_losses = torch.tensor([1.0, 1.0], dtype=torch.float64)
    method.scalars = method.scalars.detach().double().requires_grad_(True)
    norms = torch.ones(2, dtype=torch.float64)
    w = descend(method, torch.tensor([0.9, 0.3], dtype=torch.float64), norms)
    # Targets r_k^1.5 = (1.84, 0.35) sum to more than K = 2, so every w <= target is optimal;
    # the weight moves from the fast task to the slow one and stays under its target.
    assert w[0] > 1.5 and w[1] < 0.5 and w[1] <= 0.354 + 0.01
    alpha_zero = GradNorm(2, alpha=0.0)
    alpha_zero.initial_losses = method.initial_losses
    alpha_zero.scalars = alpha_zero.scalars.detach().double().requires_grad_(True)
    w0 = descend(alpha_zero, torch.tensor([0.9, 0.3], dtype=torch.float64), norms)
    torch.testing.assert_close(w0, torch.ones(2, dtype=torch.float64), rtol=0, atol=0.02)
