"""PTA and single-task training."""

import pytest
import torch
import torch.nn.functional as F

from repeval.errors import InvalidChoiceError
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer
from repeval.training.loop import training_step
from repeval.training.methods import create_method

from ._models import TASKS, attached_method, batches, tiny_model


def trained(name, steps=2, dgr=None, **options):
    model = tiny_model(3 if dgr else 0)
    method = attached_method(name, model, **options)
    opt = torch.optim.SGD([*model.parameters(), *method.parameters()], lr=0.1)
    reg = DummyGradientRegularizer([model.dummy_heads[t.name] for t in TASKS], dgr, tasks=method.trained_tasks) if dgr else None
    out = [training_step(model, b, method, reg, opt) for b in batches(steps)]
    return model, method, out


def test_pta_with_one_decoder_is_equal_weighting():
    a, _, _ = trained("pta", decoders=1)
    b, _, _ = trained("ew")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_pta_loss_is_the_mean_over_decoders_and_every_decoder_trains():
    model = tiny_model()
    method = attached_method("pta", model, decoders=4)
    assert len(method.extra) == 2 and all(len(d) == 3 for d in method.extra)
    before = [p.detach().clone() for p in method.parameters()]
    batch = batches(1)[0]
    z = model.encode(batch.x)
    expected = sum(
        (F.cross_entropy(model.heads[t.name](z), y) + sum(F.cross_entropy(d(z), y) for d in decoders)) / 4
        for t, decoders, y in zip(TASKS, method.extra, batch.ys)
    )
    grads = torch.autograd.grad(expected, list(model.encoder.parameters()))
    opt = torch.optim.SGD([*model.parameters(), *method.parameters()], lr=0.0)  # inspect gradients only
    training_step(model, batch, method, None, opt)
    for g, p in zip(grads, model.encoder.parameters()):
        torch.testing.assert_close(p.grad, g, rtol=1e-5, atol=1e-7)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in method.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, method.parameters()))


def test_single_trains_its_task_only_and_penalises_only_it():
    model, method, out = trained("single", task="b", dgr=DGRConfig(lam=0.5))
    untouched = tiny_model(3)
    assert all(torch.equal(p, q) for p, q in zip(model.heads["a"].parameters(), untouched.heads["a"].parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(model.heads["b"].parameters(), untouched.heads["b"].parameters()))
    penalties = out[-1][1]
    assert penalties[0] == 0 and penalties[1] > 0
    # The encoder gradient is task b's alone: a run whose task-a labels are scrambled is identical.
    model2 = tiny_model(3)
    method2 = attached_method("single", model2, task="b")
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1)
    reg2 = DummyGradientRegularizer([model2.dummy_heads[t.name] for t in TASKS], DGRConfig(lam=0.5), tasks=method2.trained_tasks)
    for b in batches(2):
        b.ys[0] = (b.ys[0] + 1) % 3
        training_step(model2, b, method2, reg2, opt2)
    assert all(torch.equal(p, q) for p, q in zip(model.encoder.parameters(), model2.encoder.parameters()))


def test_single_needs_a_known_task():
    with pytest.raises(InvalidChoiceError, match=r"'task' option of method 'single' must be one of a, b. Got 'c'"):
        create_method("single", 2, task="c").attach(tiny_model())
    with pytest.raises(InvalidChoiceError, match="Got None"):
        create_method("single", 2).attach(tiny_model())
