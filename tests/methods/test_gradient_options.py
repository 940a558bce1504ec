"""--rep-grad and the DGR order, against brute force."""

import torch
import torch.nn.functional as F

from repeval.training.dgr import DGRConfig, DummyGradientRegularizer, with_gradient
from repeval.training.loop import training_step
from repeval.training.methods.mgda import min_norm_weights

from ._models import TASKS, attached_method, batches, tiny_model


def encoder_grads(name, dgr=None, **options):
    model = tiny_model(3 if dgr else 0)
    method = attached_method(name, model, **options)
    reg = DummyGradientRegularizer([model.dummy_heads[t.name] for t in TASKS], dgr) if dgr else None
    training_step(model, batches(1)[0], method, reg, torch.optim.SGD(model.parameters(), lr=0.0))
    return [p.grad.clone() for p in model.encoder.parameters()]


def test_rep_grad_mgda_is_the_min_norm_point_of_the_gradients_at_z():
    dgr = DGRConfig(lam=0.2)
    got = encoder_grads("mgda", dgr, rep_grad=True)
    model, batch = tiny_model(3), batches(1)[0]
    z = model.encode(batch.x)
    losses = [F.cross_entropy(h, y) for h, y in zip(model.predict(z), batch.ys)]
    gz = torch.stack([torch.autograd.grad(loss, z, retain_graph=True)[0] for loss in losses])
    flat = gz.flatten(1).double()
    w = 2 * min_norm_weights(flat @ flat.T)
    z_grad, _ = DummyGradientRegularizer([model.dummy_heads[t.name] for t in TASKS], dgr)(z, batch.ys)
    cotangent = (w.float()[:, None, None] * gz).sum(0) + z_grad
    expected = torch.autograd.grad(z, list(model.encoder.parameters()), cotangent)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_with_gradient_changes_no_loss_value_and_carries_the_gradient():
    z = torch.randn(4, 3, requires_grad=True)
    zg = torch.randn(2, 4, 3)
    losses = torch.tensor([0.7, 1.3], requires_grad=True) * 1.0
    out = losses + with_gradient(z, zg)
    assert torch.equal(out.detach(), losses.detach())
    for k in range(2):
        (g,) = torch.autograd.grad(out[k], z, retain_graph=True)
        torch.testing.assert_close(g, zg[k], rtol=0, atol=1e-7)


def test_dgr_order_matters_for_mgda_not_for_the_plain_sum():
    for name, same in (("ew", True), ("mgda", False)):
        after = encoder_grads(name, DGRConfig(lam=1.0, order="after"))
        before = encoder_grads(name, DGRConfig(lam=1.0, order="before"))
        close = all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(after, before))
        assert close is same, name
