"""Every method at gradient scales from 1e-4 to 1e2 (the regime that hid Nash-MTL's short
steps), through the real per-parameter step: a model whose task gradients are chosen exactly.

The shared parameters are two tensors; the encoder is the identity on them (z = their values),
and task k's loss is g_k . z plus a head term, so grad_theta L_k = g_k to the bit. Then:
- every gradient method's `.grad` equals its formula on G (the matrix path, `aggregate`);
- methods whose rule is positively homogeneous (EW, MGDA, PCGrad, CAGrad, IMTL and the loss
  weightings at their initial state) scale their update with the gradients: u(sG) = s u(G);
- Nash-MTL's update has norm min(sqrt(K), max_norm) at every scale (`test_nash.py` checks its
  weights against an independent solver)."""

from __future__ import annotations

import math

import pytest
import torch

from repeval.training.methods import METHODS, GradientMethod, LossWeighting, ParamGroups, create_method
from repeval.training.methods.base import WrapsMethod

from ._asserts import random_grads

SCALES = (1e-4, 1e-2, 1.0, 1e2)
GRADIENT = [n for n in METHODS.names() if issubclass(METHODS.get(n), GradientMethod)]
# Loss weightings whose first step is fixed weights: Auto-lambda's needs a meta batch and a
# model pass (tested in test_autol.py); single trains one task; wrappers (SAM's normalised
# ascent is not homogeneous, PTA adds decoders) are tested around their bases elsewhere.
WEIGHTING = [n for n in METHODS.names() if issubclass(METHODS.get(n), LossWeighting)
             and not issubclass(METHODS.get(n), WrapsMethod) and n not in ("autol", "single")]
HOMOGENEOUS = [n for n in GRADIENT + WEIGHTING if n != "nash"]
# CAGrad's dual is minimised by projected gradient descent: at a flat optimum its weights are
# exact to about sqrt(float64 eps), so round-off in the Gram moves the update by ~1e-7.
RTOL = {"cagrad": 1e-6}


class ChosenGradients:
    """Shared parameters theta = (a [3, 2], b [4]); z = cat(a, b); L_k = g_k . z + h_k . c_k with
    a task head h_k, so the shared gradient of task k is g_k (rows of `grads`, [K, 10])."""

    def __init__(self, grads: torch.Tensor):
        self.grads = grads
        self.a = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
        self.b = torch.randn(4, dtype=torch.float64, requires_grad=True)
        self.heads = [torch.randn(2, dtype=torch.float64, requires_grad=True) for _ in grads]

    def backward(self, method) -> torch.Tensor:
        z = torch.cat([self.a.reshape(-1), self.b])
        losses = torch.stack([g @ z + h.sum() for g, h in zip(self.grads, self.heads)])
        params = ParamGroups([self.a, self.b], [[h] for h in self.heads])
        for p in (self.a, self.b, *self.heads):
            p.grad = None
        method.backward(losses, z, None, params)
        return torch.cat([self.a.grad.reshape(-1), self.b.grad])


def make(name: str, k: int):
    return create_method(name, k)


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", GRADIENT)
def test_the_per_parameter_step_equals_the_methods_formula(name, scale, k):
    g = random_grads(k=k, p=10, seed=k) * scale
    got = ChosenGradients(g).backward(make(name, k))
    expected = make(name, k).aggregate(g)  # a fresh copy: the same state (PCGrad's generator)
    torch.testing.assert_close(got, expected, rtol=RTOL.get(name, 1e-9), atol=1e-12 * scale)


@pytest.mark.parametrize("k", [2, 3, 5])
@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", HOMOGENEOUS)
def test_updates_scale_with_the_gradients(name, scale, k):
    g = random_grads(k=k, p=10, seed=20 + k)
    unit = ChosenGradients(g).backward(make(name, k))
    scaled = ChosenGradients(g * scale).backward(make(name, k))
    torch.testing.assert_close(scaled, unit * scale, rtol=RTOL.get(name, 1e-9), atol=1e-12 * scale)
    if name in WEIGHTING:  # fixed initial weights: the update is sum_k w_k g_k
        weights = {"ew": 1.0, "dwa": 1.0, "gradnorm": 1.0, "uw": 0.5 * math.exp(0.5)}[name]
        # UW's log variances are float32 parameters: e^{-s} carries float32's rounding.
        torch.testing.assert_close(unit, weights * g.sum(0), rtol=1e-6 if name == "uw" else 1e-12, atol=0)


@pytest.mark.parametrize("scale", SCALES)
def test_nash_step_norm_is_scale_free_through_the_per_parameter_step(scale):
    for k in (2, 3, 5):
        update = ChosenGradients(random_grads(k=k, p=10, seed=30 + k) * scale).backward(make("nash", k))
        assert float(update.norm()) == pytest.approx(1.0, rel=1e-8)  # min(sqrt(K), 1)


def test_every_gradient_and_weighting_method_is_covered():
    covered = set(GRADIENT) | set(WEIGHTING) | {"autol", "single", "sam", "pta"}
    assert covered == set(METHODS.names())
