"""Task kinds: metrics against hand-computed answers, streaming equals one pass, losses with their
ignore rules, and (parametrised over the registry) every kind's head, loss and metric contract."""

from __future__ import annotations

import math

import pytest
import torch

from repeval.errors import InvalidChoiceError
from repeval.heads import HeadConfig
from repeval.kinds import KINDS, kind_of, metric_info
from repeval.tasks import TaskSpec

OUTPUTS = {"classification": 4, "segmentation": 3, "depth": 1, "disparity": 1, "normals": 3, "saliency": 1, "edges": 1}


def spec(kind: str, **options) -> TaskSpec:
    return TaskSpec(kind[:4], OUTPUTS[kind], kind=kind, options=tuple(sorted(options.items())))


def random_target(kind, b=2, h=8, w=8, generator=None):
    g = generator or torch.Generator().manual_seed(0)
    k = kind_of(spec(kind))
    if kind == "classification":
        return torch.randint(0, 4, (b,), generator=g)
    if k.target_is_index:
        return torch.randint(-1, k.outputs, (b, h, w), generator=g)
    if kind in ("saliency", "edges"):
        t = (torch.rand(b, 1, h, w, generator=g) > 0.7).float()
        t[:, :, :2] = -1
        return t
    if kind == "normals":
        t = torch.nn.functional.normalize(torch.randn(b, 3, h, w, generator=g), dim=1)
        t[:, :, :2] = 0  # invalid rows
        return t
    t = torch.rand(b, 1, h, w, generator=g) + 0.5
    t[:, :, :2] = k.invalid
    return t


@pytest.mark.parametrize("name", KINDS.names())
def test_every_kind_builds_a_head_whose_loss_is_finite_and_differentiable(name):
    kind = kind_of(spec(name))
    torch.manual_seed(0)
    head = kind.build_head(6, HeadConfig(hidden=5, width=4, rates=(1, 2, 3)), map_side=4 if kind.dense else None)
    z = torch.randn(2, 6, 4, 4) if kind.dense else torch.randn(2, 6)
    out = head(z)
    target = random_target(name)
    loss = kind.loss(out, target)
    assert loss.dim() == 0 and torch.isfinite(loss)
    grads = torch.autograd.grad(loss, list(head.parameters()))
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    pred = kind.predict(out, target.shape[-2:] if kind.dense else None)
    metric = kind.metric()
    metric.update(pred, target)
    values = metric.compute()
    assert next(iter(values)) == kind.primary
    assert set(values) == set(kind.directions)
    assert all(metric_info(m)[0] == d for m, d in kind.directions.items())


@pytest.mark.parametrize("name", KINDS.names())
def test_streaming_metrics_over_two_halves_equal_one_pass(name):
    kind = kind_of(spec(name))
    g = torch.Generator().manual_seed(1)
    target = random_target(name, b=6, generator=g)
    if kind.dense:
        pred = kind.predict(torch.randn(6, kind.outputs, 8, 8, generator=g), (8, 8))
    else:
        pred = torch.randn(6, kind.outputs, generator=g)
    whole, halves = kind.metric(), kind.metric()
    whole.update(pred, target)
    halves.update(pred[:3], target[:3])
    halves.update(pred[3:], target[3:])
    torch.testing.assert_close(whole.state, halves.state)  # additive: all-reducible over ranks
    assert whole.compute() == pytest.approx(halves.compute(), nan_ok=True)


def test_segmentation_miou_from_the_confusion_matrix():
    kind = kind_of(spec("segmentation"))
    target = torch.tensor([[[0, 0, 1, 2, -1]]])
    labels = torch.tensor([[[0, 1, 1, 0, 2]]])
    pred = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float()
    m = kind.metric()
    m.update(pred, target)
    # class 0: TP 1, FP 1 (gt 2), FN 1 -> 1/3; class 1: TP 1, FP 1 -> 1/2; class 2: TP 0 -> 0.
    assert m.compute()["miou"] == pytest.approx((1 / 3 + 1 / 2 + 0) / 3)
    assert m.compute()["pixel_acc"] == pytest.approx(2 / 4)  # the ignored pixel counts nowhere
    # A class absent from ground truth and prediction is left out of the mean, not NaN.
    m2 = kind.metric()
    m2.update(torch.nn.functional.one_hot(torch.tensor([[[0, 1]]]), 3).permute(0, 3, 1, 2).float(), torch.tensor([[[0, 1]]]))
    assert m2.compute()["miou"] == 1.0


def test_depth_errors_global_and_batch_reductions():
    kind, batch_kind = kind_of(spec("depth")), kind_of(spec("depth", reduce="batch"))
    t1 = torch.tensor([[[[1.0, 2.0, 0.0]]]])  # one invalid pixel
    p1 = torch.tensor([[[[2.0, 2.0, 9.0]]]])
    t2 = torch.tensor([[[[4.0, 4.0, 4.0]]], [[[2.0, 2.0, 2.0]]]])
    p2 = torch.tensor([[[[5.0, 5.0, 5.0]]], [[[2.0, 2.0, 2.0]]]])
    g, b = kind.metric(), batch_kind.metric()
    for m in (g, b):
        m.update(p1, t1)
        m.update(p2, t2)
    # global: |e| = 1, 0 | 1, 1, 1 | 0, 0, 0 over 8 valid pixels
    assert g.compute()["abs_err"] == pytest.approx(4 / 8)
    assert g.compute()["rel_err"] == pytest.approx((1 / 1 + 3 * 0.25) / 8)
    # batch (Auto-lambda): batch means 1/2 (1 image) and 3/6 (2 images), weighted by images
    assert b.compute()["abs_err"] == pytest.approx((0.5 * 1 + 0.5 * 2) / 3)
    loss = kind.loss(p1, t1)
    assert loss.item() == pytest.approx(0.5)  # the invalid pixel's error of 9 is ignored


def test_disparity_keeps_valid_zeros_and_ignores_minus_one():
    kind = kind_of(spec("disparity"))
    target = torch.tensor([[[[0.0, -1.0, 1.0]]]])
    pred = torch.tensor([[[[0.5, 7.0, 1.0]]]])
    assert kind.loss(pred, target).item() == pytest.approx(0.25)
    m = kind.metric()
    m.update(pred, target)
    assert m.compute() == {"abs_err": pytest.approx(0.25)}
    assert kind.scale_target(target, 2.0).tolist() == [[[[0.0, -1.0, 2.0]]]]


def test_normal_angles_thresholds_and_median():
    kind = kind_of(spec("normals"))
    x, y = torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0])
    at = lambda deg: torch.tensor([math.cos(math.radians(deg)), math.sin(math.radians(deg)), 0.0])  # noqa: E731
    preds = torch.stack([x, x, x, x, y]).T.reshape(1, 3, 1, 5)
    target = torch.stack([x, at(10), at(20), at(40), torch.zeros(3)]).T.reshape(1, 3, 1, 5)
    m = kind.metric()
    m.update(preds, target)
    out = m.compute()
    assert out["mean_angle"] == pytest.approx(70 / 4, abs=1e-4)
    assert out["median_angle"] == pytest.approx(15.0, abs=5.01)  # the middle of 10 and 20 lies in between
    assert (out["within_11.25"], out["within_22.5"], out["within_30"]) == (0.5, 0.75, 0.75)
    odd = kind.metric()
    odd.update(preds[..., :3], target[..., :3])
    assert odd.compute()["median_angle"] == pytest.approx(10.0, abs=0.01)


def test_normal_losses_l1_and_cosine_over_valid_pixels():
    pred = torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1).repeat(1, 1, 1, 2)
    target = torch.stack([torch.tensor([0, 1.0, 0]), torch.zeros(3)]).T.reshape(1, 3, 1, 2)
    assert kind_of(spec("normals")).loss(pred, target).item() == pytest.approx(2.0)
    assert kind_of(spec("normals", loss="cosine")).loss(pred, target).item() == pytest.approx(1.0)
    flipped = kind_of(spec("normals")).flip_target(target[0])
    assert flipped[0, 0, 0].item() == 0 and flipped[1, 0, 0].item() == 1  # x negated (0 stays 0)


def test_segmentation_loss_ignores_minus_one():
    kind = kind_of(spec("segmentation"))
    out = torch.randn(1, 3, 1, 2)
    target = torch.tensor([[[1, -1]]])
    expected = torch.nn.functional.cross_entropy(out[..., :1], target[..., :1])
    torch.testing.assert_close(kind.loss(out, target), expected)


def test_dense_outputs_are_upsampled_to_the_target_size_with_aligned_corners():
    kind = kind_of(spec("depth"))
    out = torch.tensor([[[[0.0, 1.0]]]])
    up = kind.predict(out, (1, 3))
    assert up.flatten().tolist() == [0.0, 0.5, 1.0]


def test_kind_options_are_checked_with_one_line_errors():
    with pytest.raises(InvalidChoiceError, match="The 'loss' option of task kind 'normals' must be one of l1, cosine. Got 'l2'"):
        kind_of(spec("normals", loss="l2"))
    with pytest.raises(InvalidChoiceError, match="task kind 'depth' has no option 'loss'; its options are: reduce"):
        kind_of(spec("depth", loss="l1"))
    with pytest.raises(InvalidChoiceError, match="unknown task kind 'keypoints'; choose from: classification"):
        kind_of(TaskSpec("k", 2, kind="keypoints"))


def test_task_specs_round_trip_and_format_1_specs_are_classification():
    s = TaskSpec("normal", 3, kind="normals", options=(("loss", "cosine"),))
    assert TaskSpec.from_dict(s.to_dict()) == s
    old = {"name": "age", "num_classes": 2, "label_names": ["a", "b"], "ordinal": False}
    assert TaskSpec.from_dict(old).kind == "classification"


@pytest.mark.parametrize("name", KINDS.names())
def test_the_ignore_rule_matches_what_the_metric_counts(name):
    """`valid` is the rule the loss and metric apply: perturbing targets only at invalid pixels
    changes neither."""
    kind = kind_of(spec(name))
    if not kind.dense:
        return
    target = random_target(name, b=2)
    valid = kind.valid(target)
    assert valid.shape == (2, 8, 8) and valid.any() and not valid.all()
    pred = kind.predict(torch.randn(2, kind.outputs, 8, 8, generator=torch.Generator().manual_seed(3)), (8, 8))
    other = pred.clone()
    other[~valid.unsqueeze(1).expand_as(other)] = 7.0
    m1, m2 = kind.metric(), kind.metric()
    m1.update(pred, target)
    m2.update(other if name != "normals" else torch.nn.functional.normalize(other, dim=1), target)
    assert m1.compute() == pytest.approx(m2.compute())


@pytest.mark.parametrize("name", ["saliency", "edges"])
def test_binary_metrics_equal_brute_force_over_thresholds(name):
    """maxF (beta^2 = 0.3) / max IoU for saliency and pixel-exact max F1 for edges, against
    counting every threshold by hand; the edge loss against the balanced BCE written out."""
    kind = kind_of(spec(name))
    g = torch.Generator().manual_seed(4)
    target = random_target(name, b=3, h=16, w=16, generator=g)
    logits = torch.randn(3, 1, 16, 16, generator=g) * 2
    metric = kind.metric()
    metric.update(logits, target)
    values = metric.compute()
    valid = target >= 0
    p, y = torch.sigmoid(logits)[valid].double(), target[valid] > 0.5
    best_f, best_iou = 0.0, 0.0
    beta2 = 0.3 if name == "saliency" else 1.0
    for k in range(1, 100):
        hit = (p * 100).floor() >= k  # p >= k / 100, as the 100-bin histogram reads it
        tp, fp, fn = float((hit & y).sum()), float((hit & ~y).sum()), float((~hit & y).sum())
        prec, rec = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        if prec + rec > 0:
            best_f = max(best_f, (1 + beta2) * prec * rec / (beta2 * prec + rec))
        best_iou = max(best_iou, tp / max(tp + fp + fn, 1))
    if name == "saliency":
        assert values == pytest.approx({"maxf": best_f, "max_iou": best_iou}, rel=1e-9)
    else:
        w = 0.95
        bce = -(w * y * torch.log(p) + (1 - w) * ~y * torch.log(1 - p)).sum() / valid.sum()
        assert values == pytest.approx({"f_exact": best_f, "loss": float(bce)}, rel=1e-6)

