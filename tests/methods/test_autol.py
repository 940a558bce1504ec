"""Auto-lambda: the finite-difference hypergradient matches double backward; weights start at
0.1; meta passes leave batch-norm statistics alone."""

import torch
from torch import nn

from repeval.training.loop import training_step
from repeval.training.methods import AutoLambda
from repeval.training.methods.autol import autol_hypergradient

from ._models import attached_method, batches, tiny_model


def smooth_problem():
    """Two tasks on a shared tanh layer, float64, so the central difference is accurate."""
    g = torch.Generator().manual_seed(0)
    params = {"w": torch.randn(5, 4, generator=g, dtype=torch.float64),
              "a": torch.randn(4, 3, generator=g, dtype=torch.float64),
              "b": torch.randn(4, 2, generator=g, dtype=torch.float64)}

    def task_losses(batch, p):
        x, ya, yb = batch
        h = torch.tanh(x @ p["w"])
        return torch.stack([nn.functional.cross_entropy(h @ p["a"], ya), nn.functional.cross_entropy(h @ p["b"], yb)])

    def batch():
        return torch.randn(16, 5, generator=g, dtype=torch.float64), torch.randint(0, 3, (16,), generator=g), torch.randint(0, 2, (16,), generator=g)

    return params, task_losses, batch(), batch()


def test_finite_difference_hypergradient_matches_double_backward():
    params, task_losses, train, meta = smooth_problem()
    weights = torch.tensor([0.1, 0.3], dtype=torch.float64)
    lr, wd = 0.5, 1e-2
    fd = autol_hypergradient(task_losses, params, weights, train, meta, lr=lr, weight_decay=wd, r=1e-3)

    lam = weights.clone().requires_grad_(True)
    w = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    grads = torch.autograd.grad((lam * task_losses(train, w)).sum(), list(w.values()), create_graph=True)
    virtual = {k: v - lr * (g + wd * v) for (k, v), g in zip(w.items(), grads)}
    (exact,) = torch.autograd.grad(task_losses(meta, virtual).sum(), lam)
    torch.testing.assert_close(fd, exact, rtol=1e-5, atol=1e-10)
    assert exact.abs().min() > 1e-4  # a real signal, not two zeros


def test_weights_start_at_init_and_move_while_batch_norm_moves_once():
    model = tiny_model()
    method = attached_method("autol", model)
    assert isinstance(method, AutoLambda) and torch.equal(method.task_weights, torch.full((2,), 0.1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch, meta = batches(1)[0], batches(1, seed=5)[0]

    reference = tiny_model()
    reference(batch.x)  # one training-mode forward: the statistics one step should leave
    training_step(model, batch, method, None, opt, meta_batch=meta)
    for (name, b), ref in zip(model.named_buffers(), reference.buffers()):
        torch.testing.assert_close(b, ref, rtol=0, atol=0, msg=name)
    assert not torch.equal(method.task_weights, torch.full((2,), 0.1))
