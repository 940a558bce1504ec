from __future__ import annotations

import json
import math

import pytest
import torch

from repeval.checkpoint import FORMAT_VERSION, load_checkpoint, model_from_checkpoint
from repeval.errors import CheckpointError, InvalidChoiceError, NonFiniteLossError
from repeval.storage import atomic_write
from repeval.training import loop
from repeval.training import run as run_files
from repeval.training.config import TrainConfig
from repeval.training.dgr import DGRConfig
from repeval.training.loop import train
from repeval.training.methods import METHODS
from repeval.models import build_encoder

SMALL = dict(n_train=512, n_test=256)


def config(tmp_path, **kw) -> TrainConfig:
    base = dict(dataset_args=SMALL, epochs=2, batch_size=64, progress=False, out_dir=str(tmp_path / "runs"))
    return TrainConfig(**{**base, **kw})


def without_timing(lines):
    return [{k: v for k, v in m.items() if k not in ("seconds", "images_per_second")} for m in lines]


def test_training_writes_the_run_folder_and_learns(tmp_path):
    run_dir = train(config(tmp_path, epochs=3, dataset_args=dict(n_train=1024, n_test=256), dgr=DGRConfig()))
    assert run_dir.name.startswith("multidigits-ew-dgr-")
    assert {p.name for p in run_dir.iterdir()} >= {"config.json", "metrics.jsonl", "checkpoint.pt", "train_state.pt"}
    metrics = run_files.read_metrics(run_dir)
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    final = metrics[-1]["test_accuracy"]
    # Chance is 0.1 for left and right; a working loop is far above it after three short epochs,
    # and every task's training loss falls.
    assert final["left"] > 0.5 and final["right"] > 0.5
    for task in ("left", "right", "sum"):
        assert metrics[-1]["train_loss"][task] < 0.95 * metrics[0]["train_loss"][task]
    assert set(metrics[-1]["dgr_penalty"]) == {"left", "right", "sum"}
    stored = json.loads((run_dir / "config.json").read_text())
    assert stored["config"]["dgr"]["lam"] == DGRConfig().strength  # resolved, not None
    assert stored["config"]["backbone"] == "test_resnet" and stored["repeval_version"]


def test_checkpoint_contract(tmp_path):
    run_dir = train(config(tmp_path, epochs=1, dgr=DGRConfig(dummies=2)))
    raw = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert raw["format"] == "repeval.checkpoint" and raw["format_version"] == FORMAT_VERSION
    assert {"encoder", "heads", "dummy_heads", "tasks", "dataset", "input", "model", "train_config",
            "metrics", "epoch", "package_version"} <= set(raw)
    assert raw["dataset"]["name"] == "multidigits" and raw["dataset"]["args"]["split_seed"] == 0
    assert [t["name"] for t in raw["tasks"]] == ["left", "right", "sum"]
    assert raw["model"]["backbone"] == "test_resnet" and raw["model"]["dummies"] == 2
    assert raw["dummy_heads"]["left"]["p_0__weight"].shape[0] == 2
    assert raw["tasks"][0]["kind"] == "classification" and raw["model"]["heads"]["hidden"] == 64
    # The rebuilt model predicts exactly what the trained one reported.
    model = model_from_checkpoint(load_checkpoint(run_dir / "checkpoint.pt")).eval()
    from repeval import datasets
    from repeval.training.loop import evaluate
    bundle = datasets.build("multidigits", **raw["dataset"]["args"])
    test_loader = torch.utils.data.DataLoader(bundle.test, batch_size=256, collate_fn=datasets.collate_batch)
    acc = evaluate(model, test_loader, bundle, torch.device("cpu"))
    assert {k: v["accuracy"] for k, v in acc.items()} == pytest.approx(raw["metrics"]["test_accuracy"], abs=1e-6)
    assert acc == raw["metrics"]["test"]


# Stateful methods too: UW's learnable scalars, Nash-MTL's warm start, PCGrad's generator,
# Auto-lambda's weights, meta optimiser and meta batches, PTA's decoders, GradNorm's L(0).
@pytest.mark.parametrize(("with_dgr", "method"), [
    (False, "ew"), (True, "ew"), (False, "uw"), (True, "nash"), (False, "pcgrad"), (True, "autol"), (False, "pta"),
    (False, "gradnorm"),
])
def test_resume_ends_with_the_metrics_of_an_uninterrupted_run(tmp_path, monkeypatch, with_dgr, method):
    dgr = DGRConfig() if with_dgr else None
    straight = train(config(tmp_path / "a", epochs=3, dgr=dgr, method=method))

    real_save = run_files.save_epoch

    def save_then_die(run_dir, ckpt, state, metrics):
        real_save(run_dir, ckpt, state, metrics)
        if metrics["epoch"] == 1:
            raise KeyboardInterrupt  # killed right after epoch 2 was saved

    monkeypatch.setattr(run_files, "save_epoch", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "b", epochs=3, dgr=dgr, method=method))
    monkeypatch.setattr(run_files, "save_epoch", real_save)
    (interrupted,) = (tmp_path / "b" / "runs").iterdir()
    assert len(run_files.read_metrics(interrupted)) == 2
    resumed = train(TrainConfig(), resume_dir=interrupted)

    assert resumed == interrupted
    assert without_timing(run_files.read_metrics(resumed)) == without_timing(run_files.read_metrics(straight))
    a, b = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (straight, resumed))
    for key, value in a["encoder"].items():
        assert torch.equal(value, b["encoder"][key]), key


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    real_step = loop.training_step
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        losses, penalties = real_step(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 8 + 3:  # epoch 2 (8 steps per epoch here), its third step
            losses = losses * float("nan")
        return losses, penalties

    monkeypatch.setattr(loop, "training_step", poisoned)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 2, step 3"):
        train(config(tmp_path, epochs=3))
    (run_dir,) = (tmp_path / "runs").iterdir()
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    assert ckpt["epoch"] == 0
    assert all(math.isfinite(v) for v in ckpt["metrics"]["train_loss"].values())
    assert len(run_files.read_metrics(run_dir)) == 1


def test_bad_checkpoint_files_get_clear_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="is not a repeval checkpoint"):
        load_checkpoint(junk)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="no 'repeval.checkpoint' format marker"):
        load_checkpoint(other)
    future = tmp_path / "future.pt"
    torch.save({"format": "repeval.checkpoint", "format_version": 99}, future)
    with pytest.raises(CheckpointError, match="format version 99; this repeval .* reads versions 1, 2"):
        load_checkpoint(future)


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"old and good")

    def crash(f):
        f.write(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, crash)
    assert path.read_bytes() == b"old and good"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_config_errors_name_the_value_and_the_choices():
    with pytest.raises(InvalidChoiceError, match=f"unknown method 'pcgrd'; choose from: {', '.join(METHODS.names())}$"):
        TrainConfig(method="pcgrd")
    with pytest.raises(InvalidChoiceError, match="'device' parameter of TrainConfig must be one of 'auto', 'cpu', 'cuda'. Got 'tpu'"):
        TrainConfig(device="tpu")
    with pytest.raises(InvalidChoiceError, match="'batch_size' parameter of TrainConfig must be an int >= 2 and <= 65536. Got 0"):
        TrainConfig(batch_size=0)


def test_config_round_trips_through_json():
    cfg = TrainConfig(dgr=DGRConfig(lam=0.5, penalty="squared"), epochs=3).resolved()
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_utkface_defaults_follow_the_paper():
    scratch = TrainConfig(dataset="utkface", data_dir="x").resolved()
    assert (scratch.backbone, scratch.epochs, scratch.batch_size, scratch.lr_step) == ("resnet50", 100, 64, 33)
    assert TrainConfig(dataset="utkface", data_dir="x", pretrained_file="r50.pth").resolved().lr == 1e-5


def test_backbone_weights_load_from_a_local_file(tmp_path):
    """--pretrained-file: timm loads the local file (classifier weights dropped), nothing fetched."""
    import timm

    from repeval.errors import DataNotFoundError

    torch.manual_seed(123)
    source = timm.create_model("test_resnet", num_classes=10)  # with a classifier, like ImageNet weights
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    torch.manual_seed(0)
    encoder = build_encoder("test_resnet", in_chans=3, pretrained_file=path)
    for name, value in encoder.state_dict().items():
        if name in source.state_dict():
            assert torch.equal(value, source.state_dict()[name]), name
    assert not torch.equal(build_encoder("test_resnet").state_dict()["conv1.0.weight"], source.state_dict()["conv1.0.weight"])
    with pytest.raises(DataNotFoundError, match="pretrained weights file .* does not exist"):
        build_encoder("test_resnet", pretrained_file=tmp_path / "missing.pth")
