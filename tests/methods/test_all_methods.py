"""Every registered method (parametrised over the registry, so a new entry is tested here):
finite training steps that change the encoder, the same seed gives the same weights, and DGR
with lambda = 0 reproduces the method bit for bit in both orders."""

import pytest
import torch

from repeval.errors import InvalidChoiceError
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer
from repeval.training.loop import training_step
from repeval.training.methods import METHODS, create_method, rep_grad_methods

from ._models import TASKS, attached_method, batches, tiny_model


def run(name, dgr: DGRConfig | None, steps=2, **options):
    m = tiny_model(3 if dgr else 0)
    method = attached_method(name, m, **options)
    opt = torch.optim.Adam([*m.parameters(), *method.parameters()], lr=1e-2)
    reg = DummyGradientRegularizer([m.dummy_heads[t.name] for t in TASKS], dgr, tasks=method.trained_tasks) if dgr else None
    data = batches(steps)
    meta = batches(steps, seed=2) if method.needs_meta_batch else [None] * steps
    for batch, meta_batch in zip(data, meta):
        losses, _ = training_step(m, batch, method, reg, opt, meta_batch=meta_batch)
        assert torch.isfinite(losses).all()
    return [p.detach().clone() for p in m.parameters()]


@pytest.mark.parametrize("order", ["after", "before"])
@pytest.mark.parametrize("name", METHODS.names())
def test_dgr_with_lambda_zero_reproduces_the_method(name, order):
    plain, with_dgr = run(name, None), run(name, DGRConfig(lam=0.0, order=order))
    for a, b in zip(plain, with_dgr):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", METHODS.names())
def test_steps_move_the_encoder_and_repeat_exactly(name):
    start = [p.detach().clone() for p in tiny_model().encoder.parameters()]
    first, second = run(name, DGRConfig(lam=0.1)), run(name, DGRConfig(lam=0.1))
    for a, b in zip(first, second):
        assert torch.equal(a, b)
    moved = sum(float((a - s).abs().sum()) for a, s in zip(first, start))
    assert moved > 1e-3


@pytest.mark.parametrize("name", rep_grad_methods())
def test_rep_grad_runs_for_the_methods_that_support_it(name):
    plain, rep = run(name, DGRConfig(lam=0.1)), run(name, DGRConfig(lam=0.1), rep_grad=True)
    assert any(not torch.equal(a, b) for a, b in zip(plain, rep))


def test_rep_grad_is_refused_elsewhere_with_the_allowed_methods_named():
    with pytest.raises(InvalidChoiceError, match=r"--rep-grad applies to imtl, mgda only.*'pcgrad'"):
        create_method("pcgrad", 2, rep_grad=True)


def test_unknown_or_mistyped_options_are_refused():
    with pytest.raises(InvalidChoiceError, match="method 'sam' has no option 'radius'; its options are: rho"):
        create_method("sam", 2, radius=0.1)
    with pytest.raises(InvalidChoiceError, match="'rho' option of method 'sam' must be a float. Got 'big'"):
        create_method("sam", 2, rho="big")


@pytest.mark.parametrize("base", ["autol", "cagrad", "nash", "uw"])
@pytest.mark.parametrize("wrapper", ["sam", "pta"])
def test_sam_and_pta_wrap_other_methods(wrapper, base):
    plain, wrapped = run(base, DGRConfig(lam=0.1)), run(wrapper, DGRConfig(lam=0.1), base=base)
    assert all(torch.isfinite(p).all() for p in wrapped)
    assert any(not torch.equal(a, b) for a, b in zip(plain, wrapped))
    again = run(wrapper, DGRConfig(lam=0.1), base=base)
    assert all(torch.equal(a, b) for a, b in zip(wrapped, again))


def test_wrappers_refuse_wrappers_and_single_as_base():
    with pytest.raises(InvalidChoiceError, match=r"The 'base' option of SAM must be one of .*cagrad.*Got 'pta' instead"):
        create_method("sam", 2, base="pta")
    with pytest.raises(InvalidChoiceError, match="Got 'single' instead"):
        create_method("pta", 2, base="single")
