"""The one path every gradient method combines task gradients through: a float64-accurate Gram
from per-parameter tensors, and an in-place combination that becomes `.grad` (no K x P matrix)."""

from __future__ import annotations

import copy

import pytest
import torch

from repeval.training.dgr import DGRConfig, DummyGradientRegularizer
from repeval.training.methods import METHODS, GradientMethod
from repeval.training.methods.gradient import combine_, gram_matrix, task_gradients
from repeval.training.step import forward_pass, param_groups

from ._models import TASKS, attached_method, batches, tiny_model

GRADIENT_METHODS = [n for n in METHODS.names() if issubclass(METHODS.get(n), GradientMethod)]


def test_gram_is_float64_accurate_where_a_float32_product_is_not():
    torch.manual_seed(0)
    shapes = [(512, 512, 3, 3)] * 5 + [(1000, 2048), (64,)]  # 13.8 M parameters, ResNet-50-like tensors
    base = [torch.randn(s) * 1e-3 for s in shapes]
    grads = [[b + 0.5 * torch.randn(s) * 1e-3 for b, s in zip(base, shapes)] for _ in range(3)]
    reference = torch.tensor([[sum(float(torch.dot(a.double().reshape(-1), b.double().reshape(-1)))
                                   for a, b in zip(gi, gj)) for gj in grads] for gi in grads], dtype=torch.float64)
    scale = reference.diagonal().max()
    ours = (gram_matrix(grads) - reference).abs().max() / scale
    flat = torch.stack([torch.cat([g.reshape(-1) for g in task]) for task in grads])
    float32_product = ((flat @ flat.T).double() - reference).abs().max() / scale
    assert ours < 1e-6
    assert float32_product > 10 * ours  # the model is large enough to show what float32 loses


def test_combination_is_formed_in_place_in_the_first_tasks_tensors():
    grads = [[torch.full((3,), float(k + 1)), torch.full((2, 2), float(k + 1))] for k in range(3)]
    first = [t.data_ptr() for t in grads[0]]
    out = combine_(torch.tensor([0.5, 1.0, -1.0], dtype=torch.float64), grads)
    assert [t.data_ptr() for t in out] == first
    torch.testing.assert_close(out[0], torch.full((3,), 0.5 + 2.0 - 3.0), rtol=0, atol=1e-7)


@pytest.mark.parametrize("with_dgr", [False, True])
@pytest.mark.parametrize("name", GRADIENT_METHODS)
def test_backward_equals_the_brute_force_combination_in_float64(name, with_dgr):
    """.grad of the encoder = weights(G G^T)^T G (+ DGR's VJP), with G built by brute force."""
    model = tiny_model(3 if with_dgr else 0).double()
    method = attached_method(name, model)
    reg = DummyGradientRegularizer([model.dummy_heads[t.name] for t in TASKS], DGRConfig(lam=0.3)) if with_dgr else None
    batch = batches(1)[0]
    batch.x = batch.x.double()
    params = param_groups(model)
    shared = params.shared

    out = forward_pass(model, reg, batch)
    losses = method.task_losses(out.losses, out.present)
    rows = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(losses[k], shared, retain_graph=True)])
                        for k in range(len(TASKS))])
    # A copy computes the weights: the method's own state (PCGrad's generator, Nash-MTL's warm
    # start) must be the step's.
    expected = copy.deepcopy(method).weights(rows @ rows.T) @ rows
    if with_dgr:
        expected = expected + torch.cat([g.reshape(-1) for g in torch.autograd.grad(out.z, shared, out.z_grad, retain_graph=True)])

    model.zero_grad(set_to_none=True)
    out = forward_pass(model, reg, batch)
    method.backward(out.losses, out.z, out.z_grad, params)
    got = torch.cat([p.grad.reshape(-1) for p in shared])
    torch.testing.assert_close(got, expected, rtol=1e-7, atol=1e-10)


def test_task_gradients_give_zeros_for_unused_parameters_and_free_the_graph():
    w, unused = torch.randn(3, requires_grad=True), torch.randn(2, requires_grad=True)
    z = (w * 2).sum(0, keepdim=True)
    grads = task_gradients(z, [torch.ones(1), 2 * torch.ones(1)], [w, unused])
    torch.testing.assert_close(grads[1][0], torch.full((3,), 4.0))
    assert torch.equal(grads[0][1], torch.zeros(2))
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        torch.autograd.grad(z, w, torch.ones(1))
