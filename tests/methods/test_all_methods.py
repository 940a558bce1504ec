"""Every registered method: finite training steps, and DGR with lambda = 0 reproduces the
method bit for bit."""

import pytest
import torch

from repeval.models import MultiTaskModel, build_encoder
from repeval.tasks import TaskSpec
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer
from repeval.training.loop import Batch, training_step
from repeval.training.methods import METHODS, create_method

TASKS = (TaskSpec("a", 3, ("0", "1", "2")), TaskSpec("b", 2, ("0", "1")))


def model(dummies):
    torch.manual_seed(0)
    return MultiTaskModel(build_encoder("test_resnet", in_chans=1), TASKS, hidden=16, dummies=dummies)


@pytest.mark.parametrize("name", METHODS.names())
def test_dgr_with_lambda_zero_reproduces_the_method(name):
    runs = []
    for with_dgr in (False, True):
        m = model(3 if with_dgr else 0)
        method = create_method(name, len(TASKS))
        opt = torch.optim.Adam([*m.parameters(), *method.parameters()], lr=1e-2)
        reg = DummyGradientRegularizer([m.dummy_heads[t.name] for t in TASKS], DGRConfig(lam=0.0)) if with_dgr else None
        g = torch.Generator().manual_seed(1)
        for _ in range(2):
            batch = Batch(torch.randn(8, 1, 16, 16, generator=g), [torch.randint(0, 3, (8,), generator=g), torch.randint(0, 2, (8,), generator=g)])
            training_step(m, batch, method, reg, opt)
        runs.append([p.detach().clone() for p in m.parameters()])
    for a, b in zip(*runs):
        assert torch.equal(a, b)
