import pytest
import torch

from repeval.training.methods.dwa import DWA, dwa_weights
from repeval.training.methods.ew import EqualWeighting
from repeval.training.methods.uw import UncertaintyWeighting


def test_ew_is_the_sum():
    losses = torch.tensor([0.3, 1.2, 2.0])
    assert EqualWeighting(3).combine(losses, torch.ones(3, dtype=torch.bool)) == losses.sum()


def test_dwa_weights_sum_to_k_and_flatten_with_temperature():
    prev, before = torch.tensor([0.5, 1.0, 2.0]), torch.tensor([1.0, 1.0, 1.0])
    w = dwa_weights(prev, before, 2.0)
    assert float(w.sum()) == pytest.approx(3.0, abs=1e-6) and w[2] > w[1] > w[0]
    torch.testing.assert_close(dwa_weights(prev, before, 1e7), torch.ones(3), rtol=0, atol=1e-6)


def test_dwa_uses_ones_for_two_epochs_then_the_loss_ratios():
    method = DWA(2)
    losses = torch.tensor([1.0, 1.0])
    assert method.combine(losses, torch.ones(len(losses), dtype=torch.bool)) == 2.0
    method.on_epoch_end(0, torch.tensor([1.0, 1.0]))
    assert method.combine(losses, torch.ones(len(losses), dtype=torch.bool)) == 2.0
    method.on_epoch_end(1, torch.tensor([0.5, 1.0]))
    expected = dwa_weights(torch.tensor([0.5, 1.0]), torch.tensor([1.0, 1.0]), 2.0)
    torch.testing.assert_close(method.weights, expected.float())


def test_uw_optimum_is_log_loss():
    method = UncertaintyWeighting(2)
    losses = torch.tensor([0.4, 3.0])
    with torch.no_grad():
        method.log_var.copy_(torch.log(losses))
    (grad,) = torch.autograd.grad(method.combine(losses, torch.ones(len(losses), dtype=torch.bool)), method.log_var)
    torch.testing.assert_close(grad, torch.zeros(2), rtol=0, atol=1e-7)
