from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from repeval.heads import HeadConfig, mlp_head
from repeval.kinds import kind_of
from repeval.models import DummyHeads, MultiTaskModel, build_encoder
from repeval.tasks import TaskSpec
from repeval.training.dgr import (
    DEFAULT_LAMBDA, DGRConfig, DummyGradientRegularizer, dummy_gradient_penalty, dummy_losses,
)
from repeval.training.step import Batch, training_step
from repeval.training.methods import EqualWeighting
from repeval.errors import InvalidChoiceError

PENALTIES = ["norm", "squared"]


def mlp_dummies(in_features: int, hidden: int, classes: int, count: int, seed: int) -> DummyHeads:
    return DummyHeads(kind_of(TaskSpec("t", classes)), in_features, HeadConfig(hidden=hidden), count, seed)


def tiny_heads(dtype=torch.float64):
    return [mlp_dummies(6, 5, 3, 3, seed=1).to(dtype), mlp_dummies(6, 5, 4, 2, seed=2).to(dtype)]


def tiny_batch(dtype=torch.float64, n=8):
    g = torch.Generator().manual_seed(3)
    z = torch.randn(n, 6, dtype=dtype, generator=g)
    return z, [torch.randint(0, 3, (n,), generator=g), torch.randint(0, 4, (n,), generator=g)]


@pytest.mark.parametrize("penalty", PENALTIES)
def test_penalty_equals_brute_force_on_plain_modules(penalty):
    """P from the stacked fast path == autograd on ordinary nn.Sequential heads, one at a time."""
    z, ys = tiny_batch()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        plain = [mlp_head(6, 5, 3).double() for _ in range(3)]
    norms = []
    for head in plain:
        grads = torch.autograd.grad(F.cross_entropy(head(z), ys[0]), list(head.parameters()))
        norms.append(torch.sqrt(sum((g**2).sum() for g in grads)))
    expected = torch.stack(norms)
    expected = (expected**2 if penalty == "squared" else expected).mean()
    got = dummy_gradient_penalty(tiny_heads()[0], z, ys[0], penalty)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("penalty", PENALTIES)
def test_exact_penalty_gradient_passes_gradcheck(penalty):
    z, ys = tiny_batch()
    heads = tiny_heads()[1]
    z = z.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda zz: dummy_gradient_penalty(heads, zz, ys[1], penalty), (z,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("penalty", PENALTIES)
def test_regulariser_gradient_is_lambda_times_dP_dz(penalty):
    z, ys = tiny_batch()
    heads = tiny_heads()
    zz = z.clone().requires_grad_(True)
    total = sum(dummy_gradient_penalty(h, zz, y, penalty) for h, y in zip(heads, ys))
    (expected,) = torch.autograd.grad(total, zz)
    grad, penalties = DummyGradientRegularizer(heads, DGRConfig(lam=0.7, penalty=penalty))(z, ys)
    torch.testing.assert_close(grad, 0.7 * expected, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(penalties.sum(), total.detach(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("penalty", PENALTIES)
def test_finite_difference_agrees_with_exact(penalty):
    z, ys = tiny_batch()
    heads = tiny_heads()
    exact, p_exact = DummyGradientRegularizer(heads, DGRConfig(lam=1.0, penalty=penalty))(z, ys)
    fd, p_fd = DummyGradientRegularizer(heads, DGRConfig(lam=1.0, penalty=penalty, estimator="finite-diff", eps=1e-4))(z, ys)
    assert ((fd - exact).norm() / exact.norm()).item() < 1e-3
    torch.testing.assert_close(p_fd, p_exact, rtol=1e-10, atol=0)


def test_penalty_vanishes_when_dummy_gradient_does():
    """A dummy head with zero weights and zero output gradient: ||grad|| = 0 and no NaN."""
    heads = mlp_dummies(6, 5, 3, 2, seed=0).double()
    for p in heads.params():
        p.zero_()
    z, ys = tiny_batch()
    # Uniform logits, labels spread evenly -> the mean output gradient of the bias is zero.
    y = torch.tensor([0, 1, 2] * 2)
    for estimator in ("exact", "finite-diff"):
        grad, pen = DummyGradientRegularizer([heads], DGRConfig(lam=1.0, estimator=estimator))(z[:6], [y])
        assert torch.isfinite(grad).all() and pen.item() == pytest.approx(0.0, abs=1e-12)


def test_bf16_activations_are_lifted_to_float32():
    z, ys = tiny_batch(dtype=torch.float32)
    heads = tiny_heads(torch.float32)
    grad, _ = DummyGradientRegularizer(heads, DGRConfig(lam=1.0))(z.bfloat16(), ys)
    assert grad.dtype == torch.bfloat16


def test_config_validation_and_defaults():
    assert DGRConfig().strength == DEFAULT_LAMBDA["norm"]
    assert DGRConfig(penalty="squared").strength == DEFAULT_LAMBDA["squared"]
    assert DGRConfig(lam=0.0).strength == 0.0
    with pytest.raises(InvalidChoiceError, match="'estimator' parameter of DGRConfig must be one of 'exact', 'finite-diff'. Got 'fd'"):
        DGRConfig(estimator="fd")
    with pytest.raises(InvalidChoiceError, match="'dummies' parameter of DGRConfig must be an int >= 1. Got 0"):
        DGRConfig(dummies=0)
    with pytest.raises(InvalidChoiceError, match="'eps'"):
        DGRConfig(eps=0.0)


# ---- inside the training step ----------------------------------------------------------------


TASKS = (TaskSpec("a", 3, ("0", "1", "2")), TaskSpec("b", 2, ("0", "1")))


def small_model(dummies=3):
    torch.manual_seed(0)
    return MultiTaskModel(build_encoder("test_resnet", in_chans=1), TASKS, hidden=16, dummies=dummies)


def small_batch():
    g = torch.Generator().manual_seed(5)
    return Batch(torch.randn(16, 1, 16, 16, generator=g), [torch.randint(0, 3, (16,), generator=g), torch.randint(0, 2, (16,), generator=g)])


def regulariser(model, **kw):
    return DummyGradientRegularizer([model.dummy_heads[t.name] for t in TASKS], DGRConfig(**kw))


@pytest.mark.parametrize("estimator", ["exact", "finite-diff"])
def test_task_heads_get_no_gradient_from_the_penalty(estimator):
    grads = {}
    for lam in (0.0, 5.0):
        model = small_model()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        training_step(model, small_batch(), EqualWeighting(2), regulariser(model, lam=lam, estimator=estimator), opt)
        grads[lam] = {n: p.grad.clone() for n, p in model.named_parameters()}
    for name in grads[0.0]:
        if name.startswith("heads."):
            torch.testing.assert_close(grads[5.0][name], grads[0.0][name], rtol=0, atol=0)
    encoder_changed = [n for n in grads[0.0] if n.startswith("encoder.") and not torch.equal(grads[5.0][n], grads[0.0][n])]
    assert encoder_changed, "the penalty did not reach the encoder"


def test_dgr_encoder_gradient_is_the_vjp_of_z():
    """encoder grad with DGR - without == J_z^T (lambda dP/dz), computed independently."""
    batch = small_batch()
    model = small_model()
    reg = regulariser(model, lam=2.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    training_step(model, batch, EqualWeighting(2), None, opt)
    base = {n: p.grad.clone() for n, p in model.encoder.named_parameters()}
    training_step(model, batch, EqualWeighting(2), reg, opt)
    with_dgr = {n: p.grad.clone() for n, p in model.encoder.named_parameters()}
    z = model.encode(batch.x)
    z_grad, _ = reg(z, batch.ys)
    vjp = torch.autograd.grad(z, list(model.encoder.parameters()), z_grad)
    for (name, _), v in zip(model.encoder.named_parameters(), vjp):
        torch.testing.assert_close(with_dgr[name] - base[name], v, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("estimator", ["exact", "finite-diff"])
def test_dummy_heads_are_bit_identical_after_training(estimator):
    model = small_model()
    before = {k: v.clone() for k, v in model.dummy_heads.state_dict().items()}
    assert not any(k.startswith("dummy_heads.") for k, _ in model.named_parameters())
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    reg = regulariser(model, lam=1.0, estimator=estimator)
    for _ in range(3):
        training_step(model, small_batch(), EqualWeighting(2), reg, opt)
    for k, v in model.dummy_heads.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("estimator", ["exact", "finite-diff"])
def test_lambda_zero_reproduces_vanilla_bit_for_bit(estimator):
    vanilla, dgr = small_model(dummies=0), small_model(dummies=3)
    assert all(torch.equal(a, b) for a, b in zip(vanilla.parameters(), dgr.parameters()))
    opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in (vanilla, dgr)]
    reg = regulariser(dgr, lam=0.0, estimator=estimator)
    for _ in range(3):
        batch = small_batch()
        training_step(vanilla, batch, EqualWeighting(2), None, opts[0])
        training_step(dgr, batch, EqualWeighting(2), reg, opts[1])
    for (name, a), b in zip(vanilla.named_parameters(), dgr.parameters()):
        assert torch.equal(a, b), name
    for (name, a), b in zip(vanilla.named_buffers(), [b for n, b in dgr.named_buffers() if not n.startswith("dummy_heads.")]):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("estimator", ["exact", "finite-diff"])
def test_batch_norm_statistics_update_once_per_step(estimator):
    model = small_model()
    bns = [m for m in model.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    training_step(model, small_batch(), EqualWeighting(2), regulariser(model, lam=1.0, estimator=estimator), opt)
    assert all(bn.num_batches_tracked.item() == 1 for bn in bns)
    # Same running statistics as a vanilla step on the same batch.
    vanilla = small_model(dummies=0)
    training_step(vanilla, small_batch(), EqualWeighting(2), None, torch.optim.SGD(vanilla.parameters(), lr=0.0))
    for a, b in zip(bns, [m for m in vanilla.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]):
        assert torch.equal(a.running_mean, b.running_mean)


def test_dgr_lowers_its_penalty_when_training_on_it():
    """Optimising the penalty alone (zero task weight) must reduce it: the gradient has the right sign."""
    model = small_model()
    reg = regulariser(model, lam=1.0)
    batch = small_batch()
    opt = torch.optim.SGD(model.encoder.parameters(), lr=0.05)
    first = None
    for _ in range(20):
        z = model.encode(batch.x)
        z_grad, pen = reg(z, batch.ys)
        opt.zero_grad()
        z.backward(z_grad)
        opt.step()
        first = pen.sum().item() if first is None else first
    _, last = reg(model.encode(batch.x), batch.ys)
    assert last.sum().item() < 0.8 * first


def test_dummy_losses_are_per_head_means():
    z, ys = tiny_batch()
    heads = tiny_heads()[0]
    losses = dummy_losses(heads, z, ys[0], heads.params())
    for j in range(heads.count):
        w1, b1, w2, b2 = (p[j] for p in heads.params())
        logits = F.relu(z @ w1.T + b1) @ w2.T + b2
        torch.testing.assert_close(losses[j], F.cross_entropy(logits, ys[0]))


@pytest.mark.parametrize("penalty", PENALTIES)
def test_one_sided_finite_difference_agrees_with_exact_to_first_order(penalty):
    z, ys = tiny_batch()
    heads = tiny_heads()
    exact, p_exact = DummyGradientRegularizer(heads, DGRConfig(lam=1.0, penalty=penalty))(z, ys)
    errors = []
    for eps in (1e-3, 1e-4):
        fd, p_fd = DummyGradientRegularizer(heads, DGRConfig(lam=1.0, penalty=penalty, estimator="finite-diff",
                                                             fd_scheme="forward", eps=eps))(z, ys)
        errors.append(((fd - exact).norm() / exact.norm()).item())
        torch.testing.assert_close(p_fd, p_exact, rtol=1e-10, atol=0)
    # O(eps): ten times smaller steps give about ten times smaller errors (unlike central's O(eps^2)).
    assert errors[1] < 2e-3 and 5 < errors[0] / errors[1] < 20
