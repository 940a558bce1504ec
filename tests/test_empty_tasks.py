"""Batches where a task has nothing to learn (every target ignored: a PASCAL batch without a
person, an all-invalid depth crop): its loss is exactly 0 with a zero gradient, every method and
every DGR estimator stays finite, and that task's head does not move. Parametrised over the
registries (methods, kinds, estimators), so a new entry is covered here."""

from __future__ import annotations

import pytest
import torch

from repeval.archs import build_arch_encoder
from repeval.heads import HeadConfig
from repeval.kinds import KINDS, kind_of
from repeval.models import MultiTaskModel
from repeval.tasks import TaskSpec
from repeval.training.config import FD_SCHEMES
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer
from repeval.training.methods import METHODS, GradientMethod, create_method
from repeval.training.methods.gradient import gram_of_rows
from repeval.training.step import Batch, training_step

SIZE, BATCH = 16, 3
CLASSES = {"segmentation": 3}
OTHER = TaskSpec("other", 3, kind="segmentation")
ESTIMATORS = {"no-dgr": None, "exact": DGRConfig(lam=0.5, dummies=2),
              **{f"fd-{s}": DGRConfig(lam=0.5, dummies=2, estimator="finite-diff", fd_scheme=s) for s in FD_SCHEMES}}


def spec(kind: str) -> TaskSpec:
    return TaskSpec("empty", CLASSES.get(kind, 3 if kind == "normals" else 1), kind=kind)


def ignorable_kinds() -> list[str]:
    """Kinds with an ignore rule: a target filled with the kind's invalid value counts nothing."""
    out = []
    for name in KINDS.names():
        kind = kind_of(spec(name))
        if kind.dense and not bool(kind.valid(empty_target(kind)).any()):
            out.append(name)
    return out


def empty_target(kind) -> torch.Tensor:
    if kind.target_is_index:
        return torch.full((BATCH, SIZE, SIZE), int(kind.invalid_value))
    return torch.full((BATCH, kind.outputs, SIZE, SIZE), float(kind.invalid_value))


def model_for(kind: str, dummies: int) -> MultiTaskModel:
    torch.manual_seed(0)
    tasks = (spec(kind), OTHER)
    encoder = build_arch_encoder("split", "test_resnet", num_tasks=2, dense=True, input_size=(SIZE, SIZE))
    return MultiTaskModel(encoder, tasks, dummies=dummies, head_config=HeadConfig(width=4), map_side=2)


def batch(kind, seed: int) -> Batch:
    g = torch.Generator().manual_seed(seed)
    return Batch(torch.randn(BATCH, 3, SIZE, SIZE, generator=g),
                 [empty_target(kind), torch.randint(-1, 3, (BATCH, SIZE, SIZE), generator=g)])


def test_every_dense_kind_but_none_has_an_ignore_rule():
    dense = [n for n in KINDS.names() if kind_of(spec(n)).dense]
    assert ignorable_kinds() == dense  # classification has no ignore label: a batch always counts


@pytest.mark.parametrize("kind", ignorable_kinds())
def test_empty_loss_is_zero_with_zero_gradient_and_the_reference_mean_otherwise(kind):
    k = kind_of(spec(kind))
    head = k.build_head(4, HeadConfig(width=4), 2)
    out = head(torch.randn(BATCH, 4, 2, 2)).detach().requires_grad_(True)
    loss = k.loss(out, empty_target(k))
    (grad,) = torch.autograd.grad(loss, out)
    assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))
    assert not bool(k.present(empty_target(k)))


def test_segmentation_keeps_cross_entropys_mean_over_valid_pixels_bit_for_bit():
    g = torch.Generator().manual_seed(3)
    logits, target = torch.randn(4, 5, 8, 8, generator=g), torch.randint(-1, 5, (4, 8, 8), generator=g)
    kind = kind_of(TaskSpec("s", 5, kind="segmentation"))
    reference = torch.nn.functional.cross_entropy(logits, target, ignore_index=-1)
    assert kind.loss(logits, target).item() == reference.item()


def matrix():
    """Every method x kind x estimator. CI runs every method on segmentation (the kind PASCAL's
    parts task is) and every kind under `ew`, with every estimator; the rest is marked slow."""
    for name in METHODS.names():
        for kind in ignorable_kinds():
            for estimator in ESTIMATORS:
                fast = kind == "segmentation" or name == "ew"
                yield pytest.param(name, kind, estimator, marks=() if fast else pytest.mark.slow,
                                   id=f"{name}-{kind}-{estimator}")


@pytest.mark.parametrize("name, kind, estimator", list(matrix()))
def test_two_steps_with_an_empty_task_stay_finite_and_leave_its_head_alone(name, kind, estimator):
    dgr = ESTIMATORS[estimator]
    model = model_for(kind, dgr.dummies if dgr else 0)
    method = create_method(name, 2, **({"task": "empty"} if name == "single" else {}))
    method.attach(model)
    optimizer = torch.optim.Adam([*model.parameters(), *method.parameters()], lr=1e-2)
    reg = DummyGradientRegularizer([model.dummy_heads[t.name] for t in model.tasks], dgr, tasks=method.trained_tasks,
                                   per_task_z=model.per_task) if dgr else None
    head_start = [p.detach().clone() for p in model.heads["empty"].parameters()]
    for step in range(2):
        meta = batch(kind_of(spec(kind)), 10 + step) if method.needs_meta_batch else None
        losses, penalties = training_step(model, batch(kind_of(spec(kind)), step), method, reg, optimizer, meta_batch=meta)
        assert losses[0].item() == 0.0 and torch.isfinite(losses).all()
        if dgr:
            assert penalties[0].item() == 0.0 and torch.isfinite(penalties).all()
    assert all(torch.isfinite(p).all() for p in [*model.parameters(), *method.parameters()])
    assert all(torch.equal(p, s) for p, s in zip(model.heads["empty"].parameters(), head_start))


GRADIENT = [n for n in METHODS.names() if issubclass(METHODS.get(n), GradientMethod)]


@pytest.mark.parametrize("name", GRADIENT)
def test_gradient_methods_leave_a_zero_gradient_out_of_the_solve(name):
    """With task 0's gradient exactly zero, the update is the method's on the other tasks alone
    (MGDA's would otherwise be 0, IMTL's uniform, Nash-MTL's weight unbounded)."""
    g = torch.randn(2, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with_empty = create_method(name, 3).aggregate(torch.cat([torch.zeros(1, 9, dtype=torch.float64), g]))
    # CAGrad's iterative dual solve turns round-off in the Gram into ~1e-7 (see test_scales.py).
    torch.testing.assert_close(with_empty, create_method(name, 2).aggregate(g), rtol=1e-6 if name == "cagrad" else 1e-9,
                               atol=1e-12)
    weights = create_method(name, 3).solve(gram_of_rows(torch.cat([torch.zeros(1, 9, dtype=torch.float64), g])))
    assert weights[0] == 0


def test_check_data_counts_samples_without_targets_and_the_empty_batches_they_make(tmp_path):
    from repeval import datasets
    from repeval.datasets.scan import scan
    from tests.fixtures import make_pascal_folder

    root = make_pascal_folder(tmp_path / "pascal", n_train=4, person=lambda k: k == 0)
    result = scan(datasets.build("pascal", data_dir=str(root), size=32))
    assert result.without_targets["train"] == {"seg": 0, "parts": 3, "saliency": 0, "normal": 0, "edges": 0}
    assert result.without_targets["test"]["parts"] == 1  # val images 0 and 1: a person in image 0 only
    (line,) = result.empty_batch_lines(2)
    # C(3, 2) / C(4, 2) = 0.5 of the 2 batches of a shuffled epoch
    assert line == ("parts: 3 of 4 train samples (75.0%) have no valid target; a shuffled batch of 2 has none "
                    "with probability 0.5, about 1 of 2 batches per epoch")
