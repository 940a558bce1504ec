"""The dense half: DGR's dummy heads for any head module (vmap fast path against plain modules,
float64 gradcheck of the exact penalty on a conv head), every method +- DGR on scenes, the SPLIT
network's size against the reference, and format-1 checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from repeval.archs import ARCHS, build_arch_encoder
from repeval.checkpoint import load_checkpoint, model_from_checkpoint
from repeval.heads import HeadConfig
from repeval.kinds import kind_of
from repeval.models import DummyHeads, FeatureMapEncoder, MultiTaskModel
from repeval.tasks import TaskSpec
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer, dummy_gradient_penalty
from repeval.training.methods import METHODS, create_method
from repeval.training.step import training_step

DATA = Path(__file__).parent / "data"
CONV = HeadConfig(width=3, rates=(1, 2, 3))
DENSE_TASKS = (TaskSpec("seg", 3, kind="segmentation"), TaskSpec("depth", 1, kind="depth"),
               TaskSpec("normal", 3, kind="normals"))
REQUIRED_OPTIONS = {"single": {"task": "seg"}}


def dense_targets(b: int, h: int, w: int, g: torch.Generator, dtype=torch.float32):
    seg = torch.randint(-1, 3, (b, h, w), generator=g)
    depth = (torch.rand(b, 1, h, w, generator=g, dtype=dtype) + 0.5) * (torch.rand(b, 1, h, w, generator=g) > 0.1)
    normal = torch.nn.functional.normalize(torch.randn(b, 3, h, w, generator=g, dtype=dtype), dim=1)
    return [seg, depth, normal]


@pytest.mark.parametrize("task, penalty", [(DENSE_TASKS[0], "norm"), (DENSE_TASKS[1], "squared"), (DENSE_TASKS[2], "norm")],
                         ids=lambda v: getattr(v, "kind", v))
def test_exact_penalty_on_a_conv_head_passes_float64_gradcheck(task, penalty):
    heads = DummyHeads(kind_of(task), 2, CONV, count=2, seed=0, map_side=3).double()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 2, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    target = dense_targets(2, 5, 5, g, torch.float64)[DENSE_TASKS.index(task)]
    assert torch.autograd.gradcheck(lambda zz: dummy_gradient_penalty(heads, zz, target, penalty), (z,),
                                    eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("task", DENSE_TASKS, ids=lambda t: t.kind)
def test_vmapped_dummies_equal_plain_head_modules_one_at_a_time(task):
    """The stacked, vmapped fast path against autograd on the ordinary modules the builder draws."""
    kind = kind_of(task)
    heads = DummyHeads(kind, 4, CONV, count=3, seed=5, map_side=3).double()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        plain = [kind.build_head(4, CONV, 3).double().train() for _ in range(3)]
    g = torch.Generator().manual_seed(1)
    z = torch.randn(3, 4, 3, 3, generator=g, dtype=torch.float64)
    target = dense_targets(3, 6, 6, g, torch.float64)[DENSE_TASKS.index(task)]
    norms = []
    for head in plain:
        grads = torch.autograd.grad(kind.loss(head(z), target), list(head.parameters()))
        norms.append(torch.sqrt(sum((gr**2).sum() for gr in grads)))
    expected = torch.stack(norms).mean()
    torch.testing.assert_close(dummy_gradient_penalty(heads, z, target, "norm"), expected, rtol=1e-10, atol=0)
    losses = heads.losses(z, target)
    torch.testing.assert_close(losses, torch.stack([kind.loss(h(z), target) for h in plain]), rtol=1e-12, atol=0)


def test_finite_difference_agrees_with_exact_on_dense_heads():
    heads = [DummyHeads(kind_of(t), 4, CONV, count=2, seed=k, map_side=3).double() for k, t in enumerate(DENSE_TASKS)]
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    targets = dense_targets(2, 6, 6, g, torch.float64)
    exact, p_exact = DummyGradientRegularizer(heads, DGRConfig(lam=1.0))(z, targets)
    fd, p_fd = DummyGradientRegularizer(heads, DGRConfig(lam=1.0, estimator="finite-diff", eps=1e-5))(z, targets)
    assert ((fd - exact).norm() / exact.norm()).item() < 1e-3
    torch.testing.assert_close(p_fd, p_exact, rtol=1e-8, atol=0)


def tiny_dense_model(dummies: int, tasks=DENSE_TASKS, arch: str = "split") -> MultiTaskModel:
    torch.manual_seed(0)
    encoder = build_arch_encoder(arch, "test_resnet", num_tasks=len(tasks), dense=True, input_size=(16, 16))
    return MultiTaskModel(encoder, tasks, dummies=dummies, head_config=HeadConfig(width=4), map_side=2)


def scenes_batches(n: int, seed: int = 1, size: int = 4):
    """Batches of real `scenes` samples (16x16 renders), in a seeded order."""
    from repeval import datasets
    from repeval.datasets import InputNormalizer
    from repeval.training.step import to_device

    bundle = datasets.build("scenes", n_train=16, n_test=2, size=16)
    order = torch.randperm(16, generator=torch.Generator().manual_seed(seed))
    normalize = InputNormalizer(bundle.input)
    return [to_device(*bundle.train.__getitems__(order[i * size:(i + 1) * size].tolist()), normalize, torch.device("cpu"))
            for i in range(n)], bundle.tasks


@pytest.mark.parametrize("dgr", [False, True], ids=["vanilla", "dgr"])
@pytest.mark.parametrize("name", METHODS.names())
@pytest.mark.parametrize("arch", ARCHS.names())
def test_every_method_trains_on_scenes(arch, name, dgr):
    batches, tasks = scenes_batches(2)
    model = tiny_dense_model(2 if dgr else 0, tasks, arch=arch)
    method = create_method(name, len(tasks), **REQUIRED_OPTIONS.get(name, {}))
    method.attach(model)
    optimizer = torch.optim.Adam([*model.parameters(), *method.parameters()], lr=1e-2)
    reg = DummyGradientRegularizer([model.dummy_heads[t.name] for t in tasks], DGRConfig(lam=0.5),
                                   tasks=method.trained_tasks, per_task_z=model.per_task) if dgr else None
    encoder_start = [p.detach().clone() for p in model.encoder.parameters()]
    dummies_start = {k: v.clone() for k, v in model.dummy_heads.state_dict().items()}
    meta = scenes_batches(2, seed=7)[0] if method.needs_meta_batch else [None] * 2
    for batch, meta_batch in zip(batches, meta):
        losses, penalties = training_step(model, batch, method, reg, optimizer, meta_batch=meta_batch)
        assert torch.isfinite(losses).all()
        if dgr:
            assert torch.isfinite(penalties).all() and penalties[list(method.trained_tasks)].gt(0).all()
    moved = sum(float((p.detach() - s).abs().sum()) for p, s in zip(model.encoder.parameters(), encoder_start))
    assert moved > 1e-4
    assert all(torch.equal(v, dummies_start[k]) for k, v in model.dummy_heads.state_dict().items())


def test_split_network_has_the_reference_parameter_count():
    """Dilated ResNet-50 + one DeepLabv3 head per NYUv2 task: torchvision's dilated ResNet-50
    (minus fc) and torchvision's DeepLabHead (the reference's head, whose dropout has no weights)."""
    from torchvision.models import resnet50
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead

    encoder = FeatureMapEncoder("resnet50")
    reference = resnet50(weights=None, replace_stride_with_dilation=[False, True, True])
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(encoder) == count(reference) - count(reference.fc) == 23_508_032
    tasks = (TaskSpec("seg", 13, kind="segmentation"), TaskSpec("depth", 1, kind="depth"),
             TaskSpec("normal", 3, kind="normals"))
    model = MultiTaskModel(encoder, tasks, head_config=HeadConfig(), map_side=36)
    for t in tasks:
        assert count(model.heads[t.name]) == count(DeepLabHead(2048, t.num_classes))
    assert count(model) == pytest.approx(71.89e6, rel=1e-3)
    with torch.no_grad():
        assert encoder.eval()(torch.zeros(1, 3, 64, 96)).shape == (1, 2048, 8, 12)  # output stride 8


def test_format_1_checkpoints_load_and_predict_as_before():
    """A checkpoint written by repeval before task kinds (format 1): same tasks, dummies and
    test accuracy."""
    from repeval import datasets
    from repeval.training.loop import evaluate

    ckpt = load_checkpoint(DATA / "checkpoint_format1.pt")
    raw = torch.load(DATA / "checkpoint_format1.pt", weights_only=True)
    assert raw["format_version"] == 1
    model = model_from_checkpoint(ckpt).eval()
    assert [k.name for k in model.kinds] == ["classification"] * 3
    torch.testing.assert_close(model.dummy_heads["left"].params()[0], raw["dummy_heads"]["left"]["w1"])
    bundle = datasets.build("multidigits", **ckpt["dataset"]["args"])
    loader = torch.utils.data.DataLoader(bundle.test, batch_size=256, collate_fn=datasets.collate_batch)
    got = evaluate(model, loader, bundle, torch.device("cpu"))
    assert {t: m["accuracy"] for t, m in got.items()} == pytest.approx(raw["metrics"]["test_accuracy"], abs=1e-9)


def test_classification_steps_equal_the_numbers_before_task_kinds():
    """A few MultiDigits steps (ew, ew + DGR, pcgrad + finite-difference squared DGR, uw + DGR
    "before") give the losses, penalties and encoder weights recorded with the code before task
    kinds existed (bit for bit when the kinds landed; to float32 rounding since DGR's norms are
    reduced without temporaries)."""
    from repeval.datasets import collate_batch
    from repeval.training.config import TrainConfig
    from repeval.training.loop import build_training
    from repeval.training.step import to_device

    recorded = json.loads((DATA / "classification_steps_before_kinds.json").read_text())
    cases = {"ew": ("ew", None), "ew+dgr-exact-norm-after": ("ew", DGRConfig()),
             "pcgrad+dgr-finite-diff-squared-after": ("pcgrad", DGRConfig(estimator="finite-diff", penalty="squared")),
             "uw+dgr-exact-norm-before": ("uw", DGRConfig(order="before"))}
    for key, (method, dgr) in cases.items():
        cfg = TrainConfig(dataset="multidigits", dataset_args=dict(n_train=64, n_test=16), method=method, dgr=dgr,
                          batch_size=16, progress=False, seed=3).resolved()
        t = build_training(cfg)
        loader = torch.utils.data.DataLoader(t.bundle.train, batch_size=16, shuffle=False, collate_fn=collate_batch)
        # Float32 kernels round differently across CPUs (these numbers were recorded on another
        # machine; on an AMD EPYC the first step differs in the 7th digit). A finite difference divides that rounding by its step,
        # and PCGrad's projections pass it on: ~100x per step here (2e-7, 8e-6, 1e-3 relative on
        # that EPYC). So the finite-difference case is compared on its first step only, from
        # identical weights; the other cases over every step and the encoder's final weights.
        finite_diff = dgr is not None and dgr.estimator == "finite-diff"
        steps = recorded[key]["steps"][:1] if finite_diff else recorded[key]["steps"]
        rel = 1e-6
        for (images, labels), (losses_then, penalties_then) in zip(loader, steps):
            losses, penalties = training_step(t.model, to_device(images, labels, t.normalize, t.device), t.method,
                                              t.regularizer, t.optimizer, t.params)
            assert losses.tolist() == pytest.approx(losses_then, rel=rel), key
            if penalties_then is not None:
                assert penalties.tolist() == pytest.approx(penalties_then, rel=rel), key
        if finite_diff:
            continue
        total = sum(float(p.detach().double().sum()) for p in t.model.encoder.parameters())
        # float32 reductions may round differently (a norm as vector_norm, not g**2): 1e-6, not bit for bit.
        assert total == pytest.approx(recorded[key]["encoder_sum"], rel=rel), key
