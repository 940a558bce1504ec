"""SAM: the perturbation has norm rho, the update is the gradient at w + e, parameters are
restored exactly, and batch-norm statistics move once per step."""

import torch
import torch.nn.functional as F

from repeval.training.loop import training_step
from repeval.training.methods.sam import sam_perturbation

from ._models import attached_method, batches, tiny_model


def test_perturbation_has_norm_rho_along_the_gradient():
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 4, generator=g, dtype=torch.float64), torch.randn(5, generator=g, dtype=torch.float64)]
    e = sam_perturbation(grads, 0.05)
    norm = torch.sqrt(sum((t**2).sum() for t in e))
    torch.testing.assert_close(norm, torch.tensor(0.05, dtype=torch.float64), rtol=1e-9, atol=0)
    flat_e, flat_g = torch.cat([t.flatten() for t in e]), torch.cat([t.flatten() for t in grads])
    torch.testing.assert_close(flat_e / norm, flat_g / flat_g.norm(), rtol=1e-12, atol=1e-12)
    assert all(torch.equal(t, torch.zeros_like(t)) for t in sam_perturbation([torch.zeros(3)], 0.05))


def test_step_uses_the_gradient_at_the_perturbed_point_and_restores_weights():
    batch = batches(1)[0]
    model = tiny_model()
    method = attached_method("sam", model, rho=0.05)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    training_step(model, batch, method, None, opt)

    # Brute force: gradient at w, move to w + e, gradient there (statistics as after one pass).
    ref = tiny_model()
    loss = sum(F.cross_entropy(lg, y) for lg, y in zip(ref(batch.x), batch.ys))
    names, params = zip(*ref.named_parameters())
    grads = torch.autograd.grad(loss, params)
    after_one_pass = {n: b.detach().clone() for n, b in ref.named_buffers()}
    with torch.no_grad():
        for p, e in zip(params, sam_perturbation(list(grads), 0.05)):
            p.add_(e)
    loss = sum(F.cross_entropy(lg, y) for lg, y in zip(ref(batch.x), batch.ys))
    grads_at_e = torch.autograd.grad(loss, params)
    for n, g in zip(names, grads_at_e):
        expected = start[n] - g  # SGD, lr 1: w - grad(w + e); restoring w is exact
        torch.testing.assert_close(model.get_parameter(n).detach(), expected, rtol=1e-5, atol=1e-6, msg=n)
    for n, b in model.named_buffers():
        torch.testing.assert_close(b, after_one_pass[n], rtol=0, atol=0, msg=n)
    assert any(not torch.equal(buffers[n], after_one_pass[n]) for n in buffers)


def test_restoring_is_bit_exact_when_the_optimiser_does_not_move():
    model = tiny_model()
    method = attached_method("sam", model)
    start = [p.detach().clone() for p in model.parameters()]
    training_step(model, batches(1)[0], method, None, torch.optim.SGD(model.parameters(), lr=0.0))
    assert all(torch.equal(a, b.detach()) for a, b in zip(start, model.parameters()))
