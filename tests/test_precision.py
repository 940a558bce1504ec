"""The CUDA path's numerics, run on CPU: bf16 autocast (`--precision bf16` works on CPU through
`torch.autocast("cpu")`) and channels-last memory, for every registered method, task kind,
architecture and DGR estimator. Losses, penalties and weights stay finite, the weights move, and
the first step's encoder gradient points where the float32 one does.

What stays out of bf16, by design: the task losses and DGR's penalty (z is lifted to float32,
`DummyGradientRegularizer`), the Gram matrices of the gradient methods (float64), and the metrics'
sums and counts (float64).

The tolerances are measured, not hoped for. bf16 keeps 8 mantissa bits; on a randomly initialised
network with random targets, whose gradient is a small sum of large cancelling terms, that moves
the first step's encoder gradient to a cosine of 0.90-0.98 with the float32 one (classification)
and 0.82-0.93 (dense maps) on this CPU. Some settings are chaotic in any precision: SAM with DGR on
dense maps moves as much when float32 inputs are perturbed by bf16's rounding (2^-8) as under bf16.
So each case must reach the bound below, or come within SLACK of that float32 noise floor (float32
against float32 on inputs perturbed by 2^-8), whichever is lower. A lost term, a wrong sign or a DGR
gradient cast wrongly falls far below both. DGR's own part of the gradient (with DGR minus without)
is compared too, for the exact estimator: finite differences are not smooth in z (a +-eps step of
the ReLU dummies crosses different kinks once z is rounded), so for them only finiteness and
movement are asserted; on dense maps they agree with the exact gradient only loosely even in float32.
"""

from __future__ import annotations

import pytest
import torch

from repeval.archs import ARCHS, build_arch_encoder
from repeval.heads import HeadConfig
from repeval.kinds import KINDS, kind_of
from repeval.models import MultiTaskModel, to_channels_last
from repeval.tasks import TaskSpec
from repeval.training.config import ESTIMATORS
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer
from repeval.training.methods import METHODS, create_method
from repeval.training.step import Batch, Execution, training_step

from tests.methods._models import REQUIRED_OPTIONS

# Smallest cosine between the bf16 and float32 first-step encoder gradients, unless float32's own
# noise floor is lower (see the docstring).
COSINE = {"classification": 0.85, "dense": 0.75}
BF16_ROUNDING, SLACK = 2.0**-8, 0.1
# SAM takes its gradient at w + rho g/||g||, a point the first gradient chose: at initialisation
# that is chaotic in float32 as well (cosine -0.15 to 0.67 between float32 runs whose inputs differ
# by a rounding), so only finiteness and movement are asserted for it.
CHAOTIC = ("sam",)
# MTAN's per-task maps are 4x4 here, and exact DGR differentiates its DeepLabv3 dummies' batch-
# statistics norms on them: its gradient at z moves to cosine 0.986 under a 1e-3 relative change
# of z in float64, and bf16's z differs from float32's by ~3 %. On CPUs with native bf16
# convolutions (AVX512-BF16) the first step's cosine then falls to 0.66 (float32's input-noise
# floor: 0.84) while z itself agrees to cosine 0.9994. Only finiteness and movement are asserted
# for these cases; SPLIT's and every other variant's cosines are.
Z_SENSITIVE = {("dense", "mtan", "exact")}
CLASSIFICATION = (TaskSpec("a", 3, ("0", "1", "2")), TaskSpec("b", 2, ("0", "1")))
DENSE = (TaskSpec("seg", 4, kind="segmentation"), TaskSpec("depth", 1, kind="depth"), TaskSpec("normal", 3, kind="normals"))
SETTINGS = ("classification", "dense")
SIZE, BATCH = 32, 8  # smaller maps leave batch norm a handful of values per channel: chaotic in any precision
DGR_VARIANTS = (None, *ESTIMATORS)


def _model(setting: str, arch: str, dummies: int) -> MultiTaskModel:
    torch.manual_seed(0)
    dense = setting == "dense"
    tasks = DENSE if dense else CLASSIFICATION
    encoder = build_arch_encoder(arch, "test_resnet", num_tasks=len(tasks), in_chans=3, dense=dense, input_size=(SIZE, SIZE))
    return MultiTaskModel(encoder, tasks, dummies=dummies, head_config=HeadConfig(hidden=16, width=4),
                          map_side=encoder.map_side(SIZE, SIZE) if dense else None)


def _batches(setting: str, n: int, seed: int, noise: float = 0.0) -> list[Batch]:
    """`noise`: each input value times (1 + noise * N(0, 1)), the size of a rounding."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g)
        if setting == "dense":
            ys = [torch.randint(-1, 4, (BATCH, SIZE, SIZE), generator=g), torch.rand(BATCH, 1, SIZE, SIZE, generator=g) * 3,
                  torch.nn.functional.normalize(torch.randn(BATCH, 3, SIZE, SIZE, generator=g), dim=1)]
        else:
            ys = [torch.randint(0, 3, (BATCH,), generator=g), torch.randint(0, 2, (BATCH,), generator=g)]
        if noise:
            x = x * (1 + noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed + 99)))
        out.append(Batch(x, ys))
    return out


def _train(setting, arch, name, estimator, precision: str, channels_last: bool, steps: int, noise: float = 0.0):
    """(the first step's encoder gradient, the encoder's weights before and after `steps` steps)."""
    model = _model(setting, arch, 2 if estimator else 0)
    options = {"task": model.tasks[0].name} if "task" in REQUIRED_OPTIONS.get(name, {}) else {}
    method = create_method(name, len(model.tasks), **options)
    method.attach(model)
    if channels_last:
        to_channels_last(model)
    optimizer = torch.optim.Adam([*model.parameters(), *method.parameters()], lr=1e-2)
    reg = (DummyGradientRegularizer([model.dummy_heads[t.name] for t in model.tasks], DGRConfig(lam=0.5, estimator=estimator),
                                    tasks=method.trained_tasks, per_task_z=model.per_task) if estimator else None)
    batches, metas = _batches(setting, steps, 1, noise), _batches(setting, steps, 2, noise)
    if channels_last:
        for b in batches + metas:
            b.x = b.x.contiguous(memory_format=torch.channels_last)
    start = [p.detach().clone() for p in model.encoder.parameters()]
    first = None
    for step, (batch, meta) in enumerate(zip(batches, metas)):
        losses, penalties = training_step(model, batch, method, reg, optimizer,
                                          meta_batch=meta if method.needs_meta_batch else None, precision=precision)
        assert torch.isfinite(losses).all(), (step, losses)
        if reg is not None:
            assert torch.isfinite(penalties).all(), (step, penalties)
        if step == 0:
            first = torch.cat([p.grad.flatten().float() for p in model.encoder.parameters() if p.grad is not None])
    assert all(torch.isfinite(p).all() for p in model.parameters())
    return first, start, [p.detach() for p in model.encoder.parameters()]


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def _check(setting, arch, name, estimator, dgr_part: bool = False):
    first, start, end = _train(setting, arch, name, estimator, "bf16", True, steps=2)
    assert sum(float((e - s).abs().sum()) for e, s in zip(end, start)) > 1e-4, "bf16 steps did not move the encoder"
    if estimator == "finite-diff" or name in CHAOTIC or (setting, arch, estimator) in Z_SENSITIVE:
        return  # not smooth in z, chaotic at initialisation, or sensitive to z's rounding: see above
    reference, _, _ = _train(setting, arch, name, estimator, "fp32", False, steps=1)
    cosine = _cosine(first, reference)
    if cosine < COSINE[setting]:  # allowed only where float32 is as sensitive to a rounding-sized change
        perturbed, _, _ = _train(setting, arch, name, estimator, "fp32", False, steps=1, noise=BF16_ROUNDING)
        floor = _cosine(perturbed, reference)
        assert cosine >= floor - SLACK, (f"first-step encoder gradient, bf16 vs fp32: cosine {cosine:.4f}; "
                                         f"float32's noise floor {floor:.4f}")
    if dgr_part and estimator == "exact":  # DGR's own part: the gradient with DGR minus the one without
        plain_bf16, _, _ = _train(setting, arch, name, None, "bf16", True, steps=1)
        plain_fp32, _, _ = _train(setting, arch, name, None, "fp32", False, steps=1)
        part = _cosine(first - plain_bf16, reference - plain_fp32)
        assert part >= COSINE[setting], f"DGR's part of the gradient, bf16 vs fp32: cosine {part:.4f}"


# In CI: every method (classification, SPLIT, DGR exact), and every kind x architecture x DGR
# variant with EW. The whole product is the slow matrix below.
@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_steps_under_bf16_and_channels_last(name):
    _check("classification", "split", name, "exact")


@pytest.mark.parametrize("estimator", DGR_VARIANTS, ids=lambda e: e or "no-dgr")
@pytest.mark.parametrize("arch", ARCHS.names())
@pytest.mark.parametrize("setting", SETTINGS)
def test_every_kind_architecture_and_estimator_steps_under_bf16(setting, arch, estimator):
    # With EW the step is linear in DGR's z-gradient, so DGR's part can be compared on its own
    # (SAM, say, moves its second point with it).
    _check(setting, arch, "ew", estimator, dgr_part=True)


@pytest.mark.slow
@pytest.mark.parametrize("estimator", DGR_VARIANTS, ids=lambda e: e or "no-dgr")
@pytest.mark.parametrize("arch", ARCHS.names())
@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("name", METHODS.names())
def test_the_whole_matrix_under_bf16(name, setting, arch, estimator):
    _check(setting, arch, name, estimator)


@pytest.mark.parametrize("name", KINDS.names())
def test_metrics_accumulate_bf16_outputs_in_float64(name):
    classes = 1 if name in ("depth", "disparity", "saliency", "edges") else 3
    kind = kind_of(TaskSpec("t", classes, kind=name))
    g = torch.Generator().manual_seed(0)
    if kind.dense:
        output = torch.randn(2, kind.outputs, 4, 4, generator=g)
        target = (torch.randint(-1, classes, (2, 4, 4), generator=g) if kind.target_is_index
                  else torch.rand(2, kind.outputs, 4, 4, generator=g))
    else:
        output, target = torch.randn(6, classes, generator=g), torch.randint(0, classes, (6,), generator=g)
    half = output.to(torch.bfloat16)
    from_half, from_float = kind.metric(), kind.metric()
    from_half.update(kind.predict(half, target.shape[-2:] if kind.dense else None), target)
    from_float.update(kind.predict(half.float(), target.shape[-2:] if kind.dense else None), target)
    assert from_half.state.dtype == torch.float64
    torch.testing.assert_close(from_half.state, from_float.state, rtol=1e-6, atol=0)


def test_auto_resolves_to_fp32_on_cpu_and_explicit_settings_are_kept():
    assert Execution.of("cpu").to_dict() == {"device": "cpu", "precision": "fp32", "channels_last": False, "num_workers": 0,
                                             "data_on_device": False}
    assert Execution.of("cpu", "bf16", True, 3, True).to_dict() == {"device": "cpu", "precision": "bf16", "channels_last": True,
                                                                   "num_workers": 3, "data_on_device": True}


def test_a_bf16_run_records_its_execution_and_evaluates(tmp_path):
    import json

    from repeval.checkpoint import load_checkpoint
    from repeval.training.config import TrainConfig
    from repeval.training.loop import train

    run = train(TrainConfig(dataset="scenes", dataset_args=dict(n_train=8, n_test=4, size=32), epochs=1, batch_size=4,
                            aspp_width=4, precision="bf16", channels_last=True, dgr=DGRConfig(), progress=False,
                            out_dir=str(tmp_path)))
    stored = json.loads((run / "config.json").read_text())
    assert stored["config"]["precision"] == "bf16" and stored["config"]["channels_last"] is True
    assert stored["execution"] == {"device": "cpu", "precision": "bf16", "channels_last": True, "num_workers": 0,
                                   "data_on_device": False}
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["execution"] == stored["execution"]
    test = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["test"]
    assert 0 <= test["seg"]["miou"] <= 1 and test["depth"]["abs_err"] > 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_run_resolves_auto_to_bf16_and_channels_last_and_trains(tmp_path):
    import json

    from repeval.training.config import TrainConfig
    from repeval.training.loop import train

    run = train(TrainConfig(dataset="scenes", dataset_args=dict(n_train=16, n_test=8, size=64), epochs=1, batch_size=8,
                            device="cuda", dgr=DGRConfig(), progress=False, out_dir=str(tmp_path)))
    stored = json.loads((run / "config.json").read_text())
    assert stored["execution"]["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert stored["execution"]["channels_last"] is True and stored["execution"]["num_workers"] >= 1
    line = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(v == v for v in line["train_loss"].values()) and 0 <= line["test"]["seg"]["miou"] <= 1
