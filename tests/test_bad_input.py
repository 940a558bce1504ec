"""Every bad input: one line naming the bad value, exit 2, no traceback, and nothing created."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from repeval.app.cli import main
from repeval.datasets.utkface import parse_name
from tests.fixtures import make_utkface_folder


def _read_only_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.access(folder, os.W_OK):  # root writes anywhere, except on a read-only file system
        folder = Path("/proc/sys")
        if os.access(folder, os.W_OK):
            pytest.skip("no read-only folder on this machine")
    return folder


def _sweep(path: Path, spec: dict) -> str:
    path.write_text(json.dumps(spec))
    return str(path)


GOOD_TRAIN = {"dataset": "multidigits", "epochs": 1, "dataset_args": {"n_train": 64, "n_test": 32}}


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working folder with the files the bad commands name; returns (folder, names)."""
    import timm
    import torch

    root = tmp_path / "work"
    root.mkdir()
    monkeypatch.chdir(root)
    (root / "afile").write_text("not a folder")
    torch.save(timm.create_model("test_efficientnet", num_classes=10).state_dict(), root / "effnet.pth")
    bad_run = root / "badrun"
    bad_run.mkdir()
    (bad_run / "config.json").write_text('{"config": {"epochs": ')
    source = make_utkface_folder(tmp_path / "fixture")
    utk = root / "UTKFace"  # only well-named, decodable images: no skip warning before the error
    utk.mkdir()
    for path in source.iterdir():
        if parse_name(path.name) and path.stat().st_size > 100:
            shutil.copy(path, utk / path.name)
    names = {
        "file": str(root / "afile"), "weights": str(root / "effnet.pth"), "badrun": str(bad_run),
        "utk": str(utk), "readonly": str(_read_only_folder(tmp_path)),
        "sweep_ok": _sweep(root / "ok.json", {"name": "ok", "train": GOOD_TRAIN}),
        "sweep_unknown": _sweep(root / "unknown.json", {"train": {**GOOD_TRAIN, "epoch": 2}}),
        "sweep_type": _sweep(root / "type.json", {"train": {**GOOD_TRAIN, "epochs": "2"}}),
        "sweep_slash": _sweep(root / "slash.json", {"name": "a/b", "train": GOOD_TRAIN}),
        "sweep_dotdot": _sweep(root / "dotdot.json", {"name": "..", "train": GOOD_TRAIN}),
        "sweep_dgr": _sweep(root / "dgr.json", {"train": GOOD_TRAIN, "dgr": {"penalti": "norm"}}),
        "sweep_seed": _sweep(root / "seed.json", {"train": GOOD_TRAIN, "grid": {"seeds": [-1]}}),
        "sweep_lambda": _sweep(root / "lambda.json", {"train": GOOD_TRAIN, "grid": {"dgr": [True], "lambdas": ["big"]}}),
        "sweep_data": _sweep(root / "data.json", {"train": {**GOOD_TRAIN, "dataset_args": {"foo": 1}}}),
    }
    return root, names


SEED_RANGE = "must be an int >= 0 and <= 4294967295"
CASES = [
    (["train", "--data-option", "foo=1"], "dataset 'multidigits' has no option 'foo'; its options are: split_seed, n_train"),
    (["train", "--data-option", "n_train=1"], "The 'n_train' parameter of MultiDigits must be an int >= 2. Got 1 instead."),
    (["train", "--data-option", "n_train=many"], "The 'n_train' option of dataset 'multidigits' must be an int. Got 'many'"),
    (["train", "--batch-size", "1"], "The 'batch_size' parameter of TrainConfig must be an int >= 2 and <= 65536. Got 1 instead."),
    (["train", "--split-seed", "-1"], f"The 'split_seed' parameter of MultiDigits {SEED_RANGE}. Got -1 instead."),
    (["train", "--seed", "-1"], f"The 'seed' parameter of TrainConfig {SEED_RANGE}. Got -1 instead."),
    (["train", "--seed", "4294967296"], f"The 'seed' parameter of TrainConfig {SEED_RANGE}. Got 4294967296 instead."),
    (["train", "--dgr", "--dgr-seed", "-2"], f"The 'dummy_seed' parameter of DGRConfig {SEED_RANGE}. Got -2"),
    (["train", "--lr", "inf"], "The 'lr' parameter of TrainConfig must be a finite float > 0.0. Got inf instead."),
    (["train", "--lr", "nan"], "The 'lr' parameter of TrainConfig must be a finite float > 0.0. Got nan instead."),
    (["train", "--weight-decay", "inf"], "The 'weight_decay' parameter of TrainConfig must be a finite float >= 0.0. Got inf"),
    (["train", "--lr-gamma", "nan"], "The 'lr_gamma' parameter of TrainConfig must be a finite float > 0.0. Got nan"),
    (["train", "--dgr", "--dgr-lambda", "inf"], "The 'lam' parameter of DGRConfig must be a finite float >= 0.0. Got inf"),
    (["train", "--dgr", "--dgr-eps", "nan"], "The 'eps' parameter of DGRConfig must be a finite float > 0.0. Got nan"),
    (["train", "--method", "sam", "--method-option", "rho=Infinity"], "The 'rho' option of method 'sam' must be finite. Got inf"),
    (["train", "--data-dir", "{utk}"], "dataset 'multidigits' is embedded and reads no --data-dir"),
    (["train", "--out", "{file}"], "--out '{file}' is a file, not a folder"),
    (["train", "--out", "{file}/runs"], "--out '{file}/runs' cannot be created: '{file}' is a file"),
    (["train", "--out", "{readonly}/runs"], "--out '{readonly}/runs' cannot be written: '{readonly}' is read-only"),
    (["train", "--backbone", "test_resnet", "--pretrained-file", "{weights}"],
     "pretrained weights file '{weights}' does not fit backbone 'test_resnet': key"),
    (["train", "--pretrained-file", "{file}"], "pretrained weights file '{file}' cannot be read as a state dict"),
    (["train", "--resume", "{badrun}"], "'{badrun}/config.json' is not a valid run config (JSONDecodeError"),
    (["train", "--resume", "{file}"], "'{file}' is not a run folder: config.json is missing"),
    (["train", "utkface", "--data-dir", "{utk}", "--data-option", "test_fraction=0.001", "--backbone", "test_resnet"],
     "dataset 'utkface' has an empty test split"),
    (["probe", "x.pt", "--seeds", "-1"], f"The 'seed' parameter of --seeds {SEED_RANGE}. Got -1 instead."),
    (["probe", "x.pt", "--seeds", "0,,1"], "--seeds must be a comma list of integers with no empty item; got '0,,1'"),
    (["probe", "x.pt", "--seeds", ""], "--seeds must be a comma list of integers with no empty item; got ''"),
    (["probe", "x.pt", "--out", "{file}"], "--out '{file}' is a file, not a folder"),
    (["probe", "x.pt", "--max-points", "0"], "The 'max_points' parameter of repeval probe must be an int >= 10. Got 0"),
    (["probe", "{badrun}"], "does not exist"),
    (["probe", "--timm", "test_resnet", "--dataset", "multidigits", "--data-option", "foo=1"],
     "dataset 'multidigits' has no option 'foo'"),
    (["probe", "--timm", "test_resnet", "--dataset", "utkface"], "UTKFace needs its folder"),
    (["tsne", "x.pt", "--seed", "-1"], f"The 'seed' parameter of repeval tsne {SEED_RANGE}. Got -1"),
    (["universality", "x.pt", "--out", "{readonly}/u"], "cannot be written"),
    (["sweep", "{sweep_unknown}"], "unknown [train] key(s) ['epoch']; allowed: dataset, data_dir"),
    (["sweep", "{sweep_type}"], "The 'epochs' parameter of [train] must be int or None. Got '2' instead."),
    (["sweep", "{sweep_slash}"], "sweep name 'a/b' must be a folder name"),
    (["sweep", "{sweep_dotdot}"], "sweep name '..' must be a folder name"),
    (["sweep", "{sweep_dgr}"], "unknown [dgr] key(s) ['penalti']; allowed: lam, dummies"),
    (["sweep", "{sweep_seed}"], f"The 'seeds' parameter of [grid] {SEED_RANGE}. Got -1"),
    (["sweep", "{sweep_lambda}"], "The 'lambdas' parameter of [grid] must be tuple. Got ['big'] instead."),
    (["sweep", "{sweep_data}"], "dataset 'multidigits' has no option 'foo'"),
    (["sweep", "{sweep_ok}", "--out", "{file}"], "--out '{file}' is a file, not a folder"),
    (["report", "{badrun}", "--delta", "mean"], "The 'delta' parameter of repeval report must be one of"),
    (["demo", "--epochs", "0"], "The 'epochs' parameter of repeval demo must be an int >= 1. Got 0"),
    (["train", "scenes", "--aspp-rates", "12,0"], "--aspp-rates must be 'auto' or comma-separated ints >= 1 and <= 1024, e.g. 12,24,36. Got '12,0'"),
    (["train", "scenes", "--optimizer", "rmsprop"], "The 'optimizer' parameter of TrainConfig must be one of 'adam', 'sgd'. Got 'rmsprop'"),
    (["train", "scenes", "--schedule", "linear"], "The 'schedule' parameter of TrainConfig must be one of 'step', 'cosine'"),
    (["train", "scenes", "--data-option", "size=8"], "The 'size' parameter of Scenes must be an int >= 16 and <= 512. Got 8"),
    (["train", "scenes", "--data-option", "normal_loss=l2"], "The 'normal_loss' parameter of Scenes must be one of 'l1', 'cosine'"),
    (["train", "nyuv2"], "dataset 'nyuv2' needs --data-dir"),
    (["train", "nyuv2", "--data-dir", "{utk}", "--split-seed", "1"], "nyuv2 has a fixed train/val split; --split-seed must be 0"),
    (["train", "nyuv2", "--data-dir", "{utk}", "--backbone", "test_resnet"], "train/image' does not exist; expected the layout DATA_DIR/{{train,val}}/{{image,label,depth,normal}}/N.npy"),
    (["train", "cityscapes", "--data-dir", "{utk}", "--data-option", "variant=auto"], "The 'variant' parameter of Cityscapes must be one of 'dgr', 'mtan'"),
    (["train", "cityscapes", "--data-dir", "{utk}", "--backbone", "test_resnet"], "has no train/ folder; expected the 'dgr' layout"),
    (["report", "{badrun}", "--baseline", "stl"], "The 'baseline' parameter of repeval report must be one of 'autolambda-nyuv2'"),
    (["reproduce", "nyuv2"], "reproduce nyuv2 needs --data-dir"),
    (["report", "{badrun}", "--select", "best"], "The 'select' parameter of repeval report must be one of 'final', 'best-on-test'. Got 'best'"),
    (["train", "imagefolder", "--data-dir", "{utk}"], "train' does not exist; expected DATA_DIR/{{train,val}}/<class>/<image>"),
    (["train", "imagefolder", "--data-dir", "{utk}", "--split-seed", "2"], "imagefolder has a fixed train/val split; --split-seed must be 0"),
    (["train", "scenes", "--arch", "cross-stitch"], "unknown architecture 'cross-stitch'; choose from: mtan, split"),
    (["train", "scenes", "--arch", "mtan", "--arch-option", "shared=all"],
     "The 'shared' option of arch 'mtan' must be one of blocks, backbone. Got 'all' instead."),
    (["train", "scenes", "--arch-option", "shared=blocks"], "arch 'split' has no option 'shared'; its options: none"),
    (["train", "scenes", "--tasks", "seg,edges"], "dataset 'scenes' has no task 'edges'; its tasks: seg, depth, normal"),
    (["train", "scenes", "--tasks", "seg,seg"], "--tasks names a task twice: seg, seg"),
    (["train", "scenes", "--arch", "mtan", "--backbone", "test_vit"], "arch 'mtan' needs the stages of a ResNet-family or Swin backbone"),
    (["reproduce", "sensitivity", "--dataset", "pascal"], "The 'dataset' parameter of reproduce sensitivity must be one of 'nyuv2', 'cityscapes', 'scenes'"),
    (["reproduce", "sensitivity", "--dataset", "nyuv2"], "reproduce sensitivity --dataset nyuv2 needs --data-dir"),
    (["reproduce", "sensitivity", "--dataset", "scenes", "--table", "c"], "The 'table' parameter of reproduce sensitivity must be one of 'a', 'b', 'all'"),
]


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*")}


@pytest.mark.parametrize(("args", "message"), CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_bad_input_is_one_line_exit_2_and_creates_nothing(work, capsys, args, message):
    root, names = work
    args = [a.format(**names) for a in args]
    message = message.format(**names)
    before = _tree(root)
    code = main(args)
    out, err = capsys.readouterr()
    assert code == 2, err
    assert err.startswith("error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert _tree(root) == before


def test_importing_the_cli_loads_no_heavy_library():
    code = "import sys, repeval.app.cli; print(sorted(m for m in ('torch', 'timm', 'sklearn', 'matplotlib', 'scipy') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_method_registry_metadata_matches_the_classes():
    from repeval.training.methods import METHODS, rep_grad_methods

    assert rep_grad_methods() == [n for n in METHODS.names() if getattr(METHODS.get(n), "supports_rep_grad", False)]
    assert rep_grad_methods() == ["imtl", "mgda"]
