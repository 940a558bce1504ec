"""Architectures (`repeval.archs`): what each one shares, what z is, what probes read, and that
every method's update on MTAN's per-task z equals brute force over the shared parameters."""

from __future__ import annotations

import copy

import pytest
import torch

from repeval.archs import ARCHS, build_arch_encoder
from repeval.archs.stages import StagedBackbone
from repeval.backbones import FeatureMapEncoder, create_timm
from repeval.errors import InvalidChoiceError
from repeval.heads import HeadConfig
from repeval.models import MultiTaskModel
from repeval.tasks import TaskSpec
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer, dummy_gradient_penalty
from repeval.training.methods import create_method
from repeval.training.step import param_groups, training_step
from tests.test_dense import DENSE_TASKS, dense_targets

SWIN = "swin_tiny_patch4_window7_224"


def tiny(arch: str, dummies: int = 0, shared: str | None = None, seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    options = {} if shared is None else {"shared": shared}
    encoder = build_arch_encoder(arch, "test_resnet", num_tasks=3, dense=True, input_size=(16, 16), options=options)
    return MultiTaskModel(encoder, DENSE_TASKS, dummies=dummies, head_config=HeadConfig(width=4), map_side=2)


def ids(params) -> set[int]:
    return {id(p) for p in params}


@pytest.mark.parametrize("arch", ARCHS.names())
def test_parameter_sets_partition_the_model(arch):
    model = tiny(arch)
    groups = param_groups(model)
    sets = [ids(groups.shared), ids(groups.common), *(ids(h) for h in groups.heads)]
    assert sum(len(s) for s in sets) == len(set().union(*sets))  # disjoint
    assert set().union(*sets) == ids(p for name, p in model.named_parameters() if not name.startswith("dummy"))


def test_split_shares_the_whole_encoder_and_z_is_its_output():
    model = tiny("split")
    assert ids(model.shared_parameters()) == ids(model.encoder.parameters())
    assert not model.per_task and model.probe_encoder() is model.encoder
    x = torch.randn(2, 3, 16, 16)
    z = model.encode(x)
    assert model.task_input(z, 1) is z


@pytest.mark.parametrize("shared", ["blocks", "backbone"])
def test_mtan_shared_set_follows_its_option(shared):
    model = tiny("mtan", shared=shared)
    enc = model.encoder
    backbone, blocks = ids(enc.backbone.parameters()), ids(enc.blocks.parameters())
    expected = backbone | blocks if shared == "blocks" else backbone
    assert ids(model.shared_parameters()) == expected
    assert ids(model.common_parameters()) == (set() if shared == "blocks" else blocks)
    for k in range(3):  # task k's own: its head and its attention, nothing else
        assert ids(model.task_parameters(k)) == ids(model.heads[DENSE_TASKS[k].name].parameters()) | ids(enc.attention[k].parameters())


def test_mtan_z_is_each_tasks_gated_last_stage_and_probes_read_the_backbone():
    model = tiny("mtan").eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        z = model.encode(x)
        u4 = model.encoder.backbone(x)[-1][1]
        probe = model.probe_encoder()(x)
    assert z.shape == (3, *u4.shape) and torch.equal(probe, u4)
    gates = z / torch.where(u4 == 0, torch.ones_like(u4), u4)
    nonzero = u4 != 0
    for k in range(3):  # a_4^k = sigmoid mask * u_4: a gate in (0, 1) on every element
        g = gates[k][nonzero]
        assert g.gt(0).all() and g.lt(1).all()
    assert not torch.allclose(z[0], z[1])  # each task has its own attention


@pytest.mark.parametrize("name, kwargs", [("test_resnet", dict(output_stride=8)), (SWIN, dict(img_size=(32, 32)))])
def test_staged_backbone_runs_exactly_as_timm(name, kwargs):
    """The stage split changes nothing of the backbone: its last stage output equals timm's own
    feature map (features_only) built from the same seed."""
    torch.manual_seed(3)
    staged = StagedBackbone(name, dense=True, input_size=(32, 32)).eval()
    torch.manual_seed(3)
    features, _ = create_timm(name, dict(zero_init_last=False, strict_img_size=False, **kwargs), features_only=True, num_classes=0,
                              out_indices=(-1,))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours = staged(x)[-1][1]
        theirs = features.eval()(x)[-1]
    if name == SWIN:
        theirs = theirs.permute(0, 3, 1, 2)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_mtan_on_resnet50_has_the_reference_sizes():
    """Auto-lambda's MTANDeepLabv3 on NYUv2 (counted from its layer shapes): 92.35 M in all,
    4,175,936 attention parameters per task, 31,439,424 in shared_modules()."""
    tasks = (TaskSpec("seg", 13, kind="segmentation"), TaskSpec("depth", 1, kind="depth"),
             TaskSpec("normal", 3, kind="normals"))
    encoder = build_arch_encoder("mtan", "resnet50", num_tasks=3, dense=True, input_size=(64, 64))
    model = MultiTaskModel(encoder, tasks, head_config=HeadConfig(width=256, rates=(12, 24, 36)), map_side=36)
    count = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
    assert count(model.parameters()) == pytest.approx(92.35e6, rel=1e-4)
    assert count(model.shared_parameters()) == 31_439_424
    assert [count(encoder.attention[k].parameters()) for k in range(3)] == [4_175_936] * 3
    assert count(encoder.backbone.parameters()) == 23_508_032


def test_swin_feature_maps_are_nchw_at_its_own_stride():
    encoder = FeatureMapEncoder(SWIN, input_size=(64, 64)).eval()
    assert encoder.output_stride == 32 and encoder.num_features == 768
    with torch.no_grad():
        assert encoder(torch.zeros(1, 3, 64, 96)).shape == (1, 768, 2, 3)  # other sizes too (strict_img_size off)
    assert encoder.map_side(64, 96) == 2


def test_mtan_refuses_a_backbone_without_stages():
    with pytest.raises(InvalidChoiceError, match="arch 'mtan' needs the stages of a ResNet-family or Swin backbone"):
        build_arch_encoder("mtan", "test_vit", num_tasks=2)


def _targets(seed=0):
    return dense_targets(4, 16, 16, torch.Generator().manual_seed(seed))


def test_dgr_reads_each_tasks_own_z_in_mtan():
    model = tiny("mtan", dummies=2)
    ys = _targets()
    z = model.encode(torch.randn(4, 3, 16, 16)).detach()
    config = DGRConfig(lam=0.7)
    reg = DummyGradientRegularizer([model.dummy_heads[t.name] for t in DENSE_TASKS], config, per_task_z=True)
    grad, penalties = reg(z, ys)
    zz = z.clone().requires_grad_(True)
    total = sum(dummy_gradient_penalty(model.dummy_heads[t.name], zz[k], ys[k]) for k, t in enumerate(DENSE_TASKS))
    (expected,) = torch.autograd.grad(total, zz)
    torch.testing.assert_close(grad, 0.7 * expected, rtol=1e-5, atol=1e-7)
    before, _ = DummyGradientRegularizer(reg.dummy_heads, DGRConfig(lam=0.7, order="before"), per_task_z=True)(z, ys)
    for k in range(3):  # "before": task k's gradient lives in z[k] only
        assert all(before[k, j].abs().max() == 0 for j in range(3) if j != k)
        torch.testing.assert_close(before[k, k], grad[k])
        assert penalties[k] > 0


@pytest.mark.parametrize("name, options", [("pcgrad", {}), ("mgda", {}), ("mgda", {"rep_grad": True}), ("imtl", {"rep_grad": True})])
@pytest.mark.parametrize("shared", ["blocks", "backbone"])
def test_gradient_methods_on_mtan_equal_brute_force(name, options, shared):
    """The shared parameters get the method's combination of the K full per-task gradients
    (rep_grad: weights from the Gram of each task's gradient at its own z[k]); task-own
    parameters get their task's gradient; common ones the sum."""
    from repeval.training.step import Batch

    model = tiny("mtan", shared=shared).double()
    x, ys = torch.randn(4, 3, 16, 16, dtype=torch.float64), _targets()
    ys = [y.double() if y.is_floating_point() else y for y in ys]
    method = create_method(name, 3, **options)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)  # the step leaves .grad to read
    state = copy.deepcopy(method.state_dict())  # PCGrad's task order: replayed for the brute force
    training_step(model, Batch(x, ys), method, None, optimizer)

    groups = param_groups(model)
    z = model.encode(x)
    losses = model.task_losses(model.predict(z), ys)
    per_task = [torch.autograd.grad(losses[k], groups.shared, retain_graph=True, allow_unused=True) for k in range(3)]
    rows = torch.stack([torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(gs, groups.shared)])
                        for gs in per_task])
    if options.get("rep_grad"):
        own = torch.stack([torch.autograd.grad(losses[k], z, retain_graph=True)[0][k].flatten() for k in range(3)])
        own = own.float()  # the step forms the Gram of the z-gradients in float32
        w = method.weights((own @ own.T).double())
        expected = (w.to(rows.dtype)[:, None] * rows).sum(0)
    else:
        method.load_state_dict(state)
        expected = method.aggregate(rows)
    got = torch.cat([p.grad.flatten() for p in groups.shared])
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)
    for k in range(3):
        g = torch.autograd.grad(losses[k], groups.heads[k], retain_graph=True, allow_unused=True)
        for p, gk in zip(groups.heads[k], g):
            torch.testing.assert_close(p.grad, gk if gk is not None else torch.zeros_like(p), rtol=1e-6, atol=1e-9)
    if groups.common:
        summed = torch.autograd.grad(losses.sum(), groups.common, retain_graph=True)
        for p, g in zip(groups.common, summed):
            torch.testing.assert_close(p.grad, g, rtol=1e-6, atol=1e-9)


def test_single_task_dgr_on_an_imagefolder(tmp_path):
    """Table 4(a)'s last row on a generated ImageFolder tree: `--method single --dgr` on the one
    `class` task. The run penalises that task, and its checkpoint, rebuilt, predicts the test
    accuracy the run recorded."""
    from repeval import datasets
    from repeval.checkpoint import load_checkpoint, model_from_checkpoint
    from repeval.datasets import InputNormalizer
    from repeval.training import run as run_files
    from repeval.training.config import TrainConfig
    from repeval.training.loop import train
    from tests.fixtures import make_imagefolder

    root = make_imagefolder(tmp_path / "inet")
    config = TrainConfig(dataset="imagefolder", data_dir=str(root), dataset_args={"size": 16}, method="single",
                         dgr=DGRConfig(dummies=2), backbone="test_resnet", epochs=2, batch_size=4, lr=1e-2,
                         optimizer="adam", out_dir=str(tmp_path / "runs"), progress=False)
    run_dir = train(config)
    lines = run_files.read_metrics(run_dir)
    assert len(lines) == 2 and all(line["dgr_penalty"]["class"] > 0 for line in lines)
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert ckpt["train_config"]["method_args"] == {} and ckpt["tasks"][0]["label_names"] == ["cat", "dog", "zebra"]
    model = model_from_checkpoint(ckpt).eval()
    bundle = datasets.build("imagefolder", **ckpt["dataset"]["args"])
    images, labels = bundle.test.__getitems__(list(range(len(bundle.test))))
    with torch.no_grad():
        predicted = model(InputNormalizer(bundle.input)(images))[0].argmax(1)
    assert float((predicted == labels[:, 0]).float().mean()) == pytest.approx(lines[-1]["test"]["class"]["accuracy"])


def test_mtan_classification_checkpoint_round_trips_and_probes_read_the_backbone(tmp_path):
    """MTAN on a pooled (classification) encoder: the rebuilt checkpoint predicts the accuracy the
    run recorded, and `repeval probe` embeds the backbone's pooled last stage."""
    import json

    from repeval import datasets
    from repeval.app.cli import main
    from repeval.checkpoint import load_checkpoint, model_from_checkpoint
    from repeval.datasets import InputNormalizer
    from repeval.training import run as run_files
    from repeval.training.config import TrainConfig
    from repeval.training.loop import train

    config = TrainConfig(dataset="multidigits", dataset_args={"n_train": 96, "n_test": 48}, arch="mtan",
                         arch_args={"shared": "backbone"}, dgr=DGRConfig(dummies=1), epochs=1, batch_size=16,
                         out_dir=str(tmp_path / "runs"), progress=False)
    run_dir = train(config)
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert (ckpt["model"]["arch"], ckpt["model"]["arch_args"]) == ("mtan", {"shared": "backbone"})
    model = model_from_checkpoint(ckpt).eval()
    bundle = datasets.build("multidigits", **ckpt["dataset"]["args"])
    images, labels = bundle.test.__getitems__(list(range(len(bundle.test))))
    x = InputNormalizer(bundle.input)(images)
    with torch.no_grad():
        outputs = model(x)
        probe = model.probe_encoder()(x)
        u4 = model.encoder.backbone(x)[-1][1].mean(dim=(-2, -1))
    recorded = run_files.read_metrics(run_dir)[-1]["test"]
    for k, task in enumerate(model.tasks):
        accuracy = float((outputs[k].argmax(1) == labels[:, k]).float().mean())
        assert accuracy == pytest.approx(recorded[task.name]["accuracy"])
    torch.testing.assert_close(probe, u4)
    assert main(["probe", str(run_dir), "--classifiers", "knn", "--out", str(tmp_path / "probe"), "--no-progress"]) == 0
    rows = json.loads((tmp_path / "probe" / "probe.json").read_text())["rows"]
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def pooled_u4(split):
        imgs, ys = split.__getitems__(list(range(len(split))))
        with torch.no_grad():
            return model.encoder.backbone(InputNormalizer(bundle.input)(imgs))[-1][1].mean(dim=(-2, -1)).numpy(), ys.numpy()

    (xtr, ytr), (xte, yte) = pooled_u4(bundle.train), pooled_u4(bundle.test)
    for k, task in enumerate(model.tasks):  # the probe's kNN is fitted on u4, the backbone's pooled last stage
        knn = make_pipeline(StandardScaler(), KNeighborsClassifier()).fit(xtr, ytr[:, k])
        (row,) = [r for r in rows if r["task"] == task.name and r["classifier"] == "knn"]
        assert row["accuracy"] == pytest.approx(float((knn.predict(xte) == yte[:, k]).mean()), abs=1e-9)
