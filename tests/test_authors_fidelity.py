"""What the authors' released code does, available exactly: DGR's `fd_scheme="authors"` against a plain transcription of the DGR scene code's arithmetic
(`compute_hessian`): for each dummy set j, the j-th head of every task moves by eps along the
set's joint gradient, normalised by the joint norm, and the squared penalty's 2||g_j|| is the
difference quotient (L_j+ - L_j) / eps. The transcription uses ordinary autograd on one head at
a time (no vmap, no stacking), in float64. And the UTKFace heads' ReLU on the logits."""

from __future__ import annotations

import pytest
import torch

from repeval.heads import HeadConfig
from repeval.kinds import kind_of
from repeval.models import DummyHeads
from repeval.tasks import TaskSpec
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer

CONV = HeadConfig(width=3, rates=(1, 2, 3))
DENSE = (TaskSpec("seg", 3, kind="segmentation"), TaskSpec("depth", 1, kind="depth"), TaskSpec("normal", 3, kind="normals"))
CLASSIFICATION = (TaskSpec("a", 4), TaskSpec("b", 2), TaskSpec("c", 3))


def setting(dense: bool, count: int):
    g = torch.Generator().manual_seed(4)
    if dense:
        heads = [DummyHeads(kind_of(t), 4, CONV, count=count, seed=10 + k, map_side=3).double() for k, t in enumerate(DENSE)]
        z = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
        targets = [torch.randint(-1, 3, (2, 6, 6), generator=g),
                   (torch.rand(2, 1, 6, 6, generator=g, dtype=torch.float64) + 0.5),
                   torch.nn.functional.normalize(torch.randn(2, 3, 6, 6, generator=g, dtype=torch.float64), dim=1)]
    else:
        heads = [DummyHeads(kind_of(t), 6, HeadConfig(hidden=5), count=count, seed=20 + k).double()
                 for k, t in enumerate(CLASSIFICATION)]
        z = torch.randn(8, 6, generator=g, dtype=torch.float64)
        targets = [torch.randint(0, t.num_classes, (8,), generator=g) for t in CLASSIFICATION]
    return heads, z, targets


def transcription(heads, z, targets, lam: float, eps: float, squared: bool) -> torch.Tensor:
    """The authors' estimate of lambda * dP/dz, set by set, with plain autograd."""
    count = heads[0].count
    total = torch.zeros_like(z)
    for j in range(count):
        params = [[p[j].clone().requires_grad_(True) for p in h.params()] for h in heads]

        def joint_loss(zz, ps):
            return sum(h.kind.loss(torch.func.functional_call(h._base, dict(zip(h.names, p)), (zz,)), y)
                       for h, p, y in zip(heads, ps, targets))

        zz = z.clone().requires_grad_(True)
        base = joint_loss(zz, params)
        flat = [q for p in params for q in p]
        grads = torch.autograd.grad(base, flat, retain_graph=True)
        norm = torch.sqrt(sum((g_ ** 2).sum() for g_ in grads))
        moved, it = [], iter(grads)
        for p in params:
            moved.append([q.detach() + eps * next(it) / norm for q in p])
        plus = joint_loss(zz, moved)
        (d_plus,) = torch.autograd.grad(plus, zz, retain_graph=True)
        (d_base,) = torch.autograd.grad(base, zz)
        factor = 2 * (plus - base).detach() / eps if squared else 1.0
        total += factor * (d_plus - d_base) / eps / count
    return lam * total


@pytest.mark.parametrize("penalty", ["squared", "norm"])
@pytest.mark.parametrize("count", [1, 3])
@pytest.mark.parametrize("dense", [True, False], ids=["deeplab-heads", "mlp-heads"])
def test_authors_scheme_equals_the_transcription_in_float64(dense, count, penalty):
    heads, z, targets = setting(dense, count)
    config = DGRConfig(lam=0.1, penalty=penalty, estimator="finite-diff", fd_scheme="authors", eps=1e-3, dummies=count)
    got, _ = DummyGradientRegularizer(heads, config)(z, targets)
    expected = transcription(heads, z, targets, 0.1, 1e-3, penalty == "squared")
    assert ((got - expected).norm() / expected.norm()).item() <= 1e-10


def test_before_order_splits_the_authors_estimate_into_task_shares_that_add_up():
    heads, z, targets = setting(True, 3)
    config = DGRConfig(lam=0.1, penalty="squared", estimator="finite-diff", fd_scheme="authors", dummies=3)
    after, _ = DummyGradientRegularizer(heads, config)(z, targets)
    per_task, _ = DummyGradientRegularizer(heads, DGRConfig(**{**config.__dict__, "order": "before"}))(z, targets)
    assert per_task.shape == (3, *z.shape)
    torch.testing.assert_close(per_task.sum(0), after, rtol=1e-12, atol=1e-15)


def test_authors_and_per_task_schemes_meet_only_where_the_penalty_is_separable():
    """The squared norm of a set's joint gradient is the sum of its tasks' squared norms, so as
    eps -> 0 the two one-sided schemes estimate the same derivative; the joint *norm* is not a
    sum, so for penalty "norm" they estimate different things with several tasks (and the same
    with one)."""
    heads, z, targets = setting(True, 3)

    def estimate(scheme, penalty, hs, ys):
        config = DGRConfig(lam=1.0, penalty=penalty, estimator="finite-diff", fd_scheme=scheme, dummies=3, eps=1e-6)
        return DummyGradientRegularizer(hs, config)(z, ys)[0]

    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(estimate("authors", "squared", heads, targets), estimate("forward", "squared", heads, targets)) < 1e-4
    assert rel(estimate("authors", "norm", heads[:1], targets[:1]), estimate("forward", "norm", heads[:1], targets[:1])) < 1e-4
    assert rel(estimate("authors", "norm", heads, targets), estimate("forward", "norm", heads, targets)) > 1e-2


def test_head_relu_clips_the_logits_of_task_and_dummy_heads_and_survives_a_checkpoint(tmp_path):
    from repeval.checkpoint import load_checkpoint, model_from_checkpoint
    from repeval.training import run as run_files
    from repeval.training.config import TrainConfig
    from repeval.training.loop import train

    plain = kind_of(TaskSpec("age", 7)).build_head(16, HeadConfig(hidden=8))
    relu = kind_of(TaskSpec("age", 7)).build_head(16, HeadConfig(hidden=8, logit_relu=True))
    relu.load_state_dict(plain.state_dict())  # the same weights: the ReLU has none
    x = torch.randn(64, 16)
    torch.testing.assert_close(relu(x), plain(x).clamp_min(0), rtol=0, atol=0)
    assert 0.2 < float((relu(x) == 0).float().mean()) < 0.8  # about half are clipped at initialisation

    run = train(TrainConfig(dataset="multidigits", dataset_args={"n_train": 64, "n_test": 32}, head_relu=True,
                            dgr=DGRConfig(dummies=1), epochs=1, batch_size=32, out_dir=str(tmp_path), progress=False))
    model = model_from_checkpoint(load_checkpoint(run / "checkpoint.pt"))
    assert model.head_config.logit_relu
    assert all(isinstance(head[-1], torch.nn.ReLU) for head in model.heads.values())
    assert all(isinstance(dummies._base[-1], torch.nn.ReLU) for dummies in model.dummy_heads.values())
    assert run_files.read_config(run).head_relu is True


def test_reproduce_uses_the_authors_scheme_on_scenes_and_their_heads_on_utkface():
    from repeval.training.reproduce import SCENE_DGR, utkface_spec

    assert SCENE_DGR["fd_scheme"] == "authors"
    assert utkface_spec("UTKFace", None, smoke=True)["train"]["head_relu"] is True
