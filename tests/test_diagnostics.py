"""Watching training: DGR's pull against a hand computation (SPLIT, MTAN's per-task z, both
orders, a loss weighting), each method's reported weights against its own step, TensorBoard's
event files read back with tensorboard's reader, the epoch means in metrics.jsonl and the
report's pull plot, and `--tensorboard` without the package installed."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest
import torch

from repeval.archs import build_arch_encoder
from repeval.heads import HeadConfig
from repeval.models import MultiTaskModel
from repeval.tasks import TaskSpec
from repeval.training.diagnostics import StepWatch, method_values
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer
from repeval.training.methods import METHODS, GradientMethod, create_method
from repeval.training.step import Batch, training_step

from .methods._models import TASKS, attached_method, batches, tiny_model
from .methods.test_scales import ChosenGradients

DENSE = (TaskSpec("seg", 3, kind="segmentation"), TaskSpec("depth", 1, kind="depth"), TaskSpec("normal", 3, kind="normals"))


def dense_setting(arch: str):
    torch.manual_seed(0)
    encoder = build_arch_encoder(arch, "test_resnet", num_tasks=3, dense=True, input_size=(16, 16))
    model = MultiTaskModel(encoder, DENSE, dummies=2, head_config=HeadConfig(width=4), map_side=2)
    g = torch.Generator().manual_seed(1)
    ys = [torch.randint(-1, 3, (4, 16, 16), generator=g), torch.rand(4, 1, 16, 16, generator=g) + 0.5,
          torch.nn.functional.normalize(torch.randn(4, 3, 16, 16, generator=g), dim=1)]
    return model, Batch(torch.randn(4, 3, 16, 16, generator=g), ys)


def hand_pull(model, batch, config: DGRConfig, task_weights: torch.Tensor | None = None):
    """Per task and total: ||lambda dP_k/dz|| / ||w_k dL_k/dz||, from scratch on a copy."""
    model = copy.deepcopy(model)
    z = model.encode(batch.x)
    losses = model.task_losses(model.predict(z), batch.ys)
    weights = torch.ones(len(losses)) if task_weights is None else task_weights
    g = [weights[k] * torch.autograd.grad(losses[k], z, retain_graph=True)[0] for k in range(len(losses))]
    reg = DummyGradientRegularizer([model.dummy_heads[t.name] for t in model.tasks], config, per_task_z=model.per_task)
    dgr, _ = reg.task_gradients(z.detach(), batch.ys)
    if model.per_task:  # task k's slot of z
        g = [gk[k] for k, gk in enumerate(g)]
        own = [dgr[k, k] for k in range(len(g))]
        task_total = torch.sqrt(sum(gk.norm() ** 2 for gk in g))
    else:
        own = list(dgr)
        task_total = torch.stack(g).sum(0).norm()
    per_task = [float(o.norm() / gk.norm()) for o, gk in zip(own, g)]
    return per_task, float(dgr.sum(0).norm() / task_total)


def watched_step(model, batch, method_name: str, config: DGRConfig) -> dict[str, float]:
    method = create_method(method_name, len(model.tasks))
    method.attach(model)
    reg = DummyGradientRegularizer([model.dummy_heads[t.name] for t in model.tasks], config, per_task_z=model.per_task)
    watch = StepWatch(len(model.tasks))
    training_step(model, batch, method, reg, torch.optim.SGD(model.parameters(), lr=0.01), watch=watch)
    return {k: float(v) for k, v in watch.values.items()}


@pytest.mark.parametrize("order", ["after", "before"])
@pytest.mark.parametrize("arch", ["split", "mtan"])
def test_pull_equals_the_hand_computation(arch, order):
    model, batch = dense_setting(arch)
    config = DGRConfig(lam=0.7, dummies=2, order=order)
    per_task, total = hand_pull(model, batch, config)
    got = watched_step(model, batch, "ew", config)
    for k in range(3):
        assert got[f"dgr_pull/{k}"] == pytest.approx(per_task[k], rel=1e-5)
    assert got["dgr_pull/total"] == pytest.approx(total, rel=1e-5)
    assert got["dgr_penalty/0"] > 0 and math.isfinite(got["loss/2"])


def test_pull_of_a_loss_weighting_is_against_the_weighted_task_gradient():
    """UW backpropagates e^{-s}/2 * L_k: the pull compares DGR with what the method applies."""
    model, batch = dense_setting("split")
    config = DGRConfig(lam=0.7, dummies=2)
    per_task, total = hand_pull(model, batch, config, task_weights=torch.full((3,), 0.5 * math.exp(0.5)))
    got = watched_step(model, batch, "uw", config)
    assert [got[f"dgr_pull/{k}"] for k in range(3)] == pytest.approx(per_task, rel=1e-5)
    assert got["dgr_pull/total"] == pytest.approx(total, rel=1e-5)


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_can_be_watched_and_its_pull_is_finite(name):
    model = tiny_model(3)
    method = attached_method(name, model)
    reg = DummyGradientRegularizer([model.dummy_heads[t.name] for t in TASKS], DGRConfig(), tasks=method.trained_tasks)
    watch = StepWatch(len(TASKS))
    meta = batches(1, seed=3)[0] if method.needs_meta_batch else None
    training_step(model, batches(1)[0], method, reg, torch.optim.Adam(model.parameters()), meta_batch=meta, watch=watch)
    trained = method.trained_tasks
    assert all(math.isfinite(float(watch.values[f"dgr_pull/{k}"])) for k in trained)
    assert all(torch.isfinite(v).all() for v in method_values(method.diagnostics()).values())


WEIGHTED = [n for n in METHODS.names() if issubclass(METHODS.get(n), GradientMethod)] + ["ew", "dwa", "uw", "gradnorm", "autol"]


@pytest.mark.parametrize("name", WEIGHTED)
def test_reported_weights_are_the_ones_the_step_used(name):
    """.grad of the shared parameters = sum_k w_k g_k with w the method's `diagnostics()`."""
    g = torch.randn(3, 10, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    method = create_method(name, 3)
    model = ChosenGradients(g)
    update = model.backward(method)
    weights = method.diagnostics().get("weights", torch.ones(3)).to(torch.float64)
    torch.testing.assert_close(update, weights @ g, rtol=1e-6, atol=1e-12)
    if name == "pcgrad":
        conflicts = int(((g @ g.T) < 0).sum()) // 2
        assert 0 <= float(method.diagnostics()["projections"]) <= 2 * conflicts


def test_tensorboard_events_read_back_and_match_metrics_jsonl(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from repeval.training import run as run_files
    from repeval.training.config import TrainConfig
    from repeval.training.loop import train

    run = train(TrainConfig(dataset="multidigits", dataset_args={"n_train": 128, "n_test": 32}, method="nash",
                            dgr=DGRConfig(), epochs=2, batch_size=32, log_every=2, tensorboard=True,
                            out_dir=str(tmp_path), progress=False))
    lines = run_files.read_metrics(run)
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    pull = events.Scalars("dgr_pull/total")
    assert [e.step for e in pull] == [1, 2, 4, 5, 6, 8]  # the first and every 2nd step of each 4-step epoch
    for epoch, line in enumerate(lines):
        epoch_events = [e.value for e in pull if epoch * 4 < e.step <= (epoch + 1) * 4]
        assert line["dgr_pull"]["total"] == pytest.approx(sum(epoch_events) / len(epoch_events), rel=1e-5)
        (test,) = [e for e in events.Scalars("test/left/accuracy") if e.step == (epoch + 1) * 4]
        assert test.value == pytest.approx(line["test"]["left"]["accuracy"], rel=1e-6)
        assert set(line["method"]["weights"]) == {"left", "right", "sum"}
    tags = set(events.Tags()["scalars"])
    assert {"loss/left", "dgr_penalty/sum", "method/weights/right", "method/alpha/left", "lr", "images_per_second"} <= tags


def test_without_tensorboard_nothing_is_written_and_the_cli_never_imports_it(tmp_path):
    from repeval.training import run as run_files
    from repeval.training.config import TrainConfig
    from repeval.training.loop import train

    run = train(TrainConfig(dataset="multidigits", dataset_args={"n_train": 64, "n_test": 32}, dgr=DGRConfig(),
                            epochs=1, batch_size=32, out_dir=str(tmp_path), progress=False))
    assert not (run / "tb").exists()
    assert "dgr_pull" in run_files.read_metrics(run)[0]  # the epoch means are written either way
    code = ("import sys; from repeval.app.entry import main; main(['train', '--help']); "
            "print(any(m.startswith(('tensorboard', 'torch.utils.tensorboard')) for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def test_tensorboard_without_the_package_is_refused_with_how_to_install(tmp_path, monkeypatch, capsys):
    import importlib.util

    from repeval.app.entry import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    code = main(["train", "--tensorboard", "--epochs", "1", "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert 'needs the tensorboard package, which is not installed: pip install -e ".[tensorboard]"' in err
    assert not (tmp_path / "runs").exists()


def test_report_draws_the_pull_and_says_when_dgr_dominated(tmp_path):
    from repeval.training.config import TrainConfig
    from repeval.training.results import write_report
    from repeval.training import run as run_files

    def fake_run(name, lam, pulls, seed=0):
        run_dir = tmp_path / "runs" / name
        run_dir.mkdir(parents=True)
        config = TrainConfig(dataset="multidigits", dgr=DGRConfig(lam=lam), seed=seed, epochs=len(pulls)).resolved()
        run_files.write_config(run_dir, config, {})
        lines = [{"epoch": e, "test": {"left": {"accuracy": 0.5}, "right": {"accuracy": 0.5}, "sum": {"accuracy": 0.5}},
                  "dgr_pull": {"total": p}} for e, p in enumerate(pulls)]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))

    fake_run("strong-0", 1.0, [5.0, 3.0, 0.5])
    fake_run("strong-1", 1.0, [7.0, 1.5, 0.7], seed=1)
    fake_run("weak", 0.1, [0.4, 0.2, 0.1])
    out, table = write_report([tmp_path / "runs"], tmp_path / "report")
    assert (out / "dgr_pull.png").is_file() and (out / "dgr_pull.svg").is_file()
    assert "DGR's pull exceeded 1 for most of training in ew + DGR (λ=1): DGR dominated" in table
    assert "λ=0.1): DGR dominated" not in table
