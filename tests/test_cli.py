from __future__ import annotations

import pytest
import torch

from repeval.app.cli import main
from repeval.training.methods import METHODS


def run(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "mnist"], "error: unknown dataset 'mnist'; choose from: cityscapes, imagefolder, multidigits, nyuv2, pascal, scenes, utkface"),
        (["train", "--backbone", "resnet5"], "error: unknown backbone 'resnet5'; choose any timm model name"),
        (["train", "--dgr", "--dgr-penalty", "cube"], "error: The 'penalty' parameter of DGRConfig must be one of 'norm', 'squared'. Got 'cube' instead."),
        (["train", "--method", "nope"], f"error: unknown method 'nope'; choose from: {', '.join(METHODS.names())}"),
        (["train", "--device", "tpu"], "'device' parameter of TrainConfig must be one of 'auto', 'cpu', 'cuda'"),
        (["train", "--epochs", "x"], "error: Invalid value for '--epochs'"),
        (["train", "--bogus"], "error: No such option: --bogus"),
        (["train", "utkface"], "error: dataset 'utkface' needs --data-dir"),
        (["train", "utkface", "--data-dir", "/no/such/folder"], "does not exist. UTKFace cannot be downloaded"),
        (["train", "--data-option", "n_train"], "--data-option must look like KEY=VALUE; got 'n_train'"),
        (["train", "--method", "pcgrad", "--rep-grad"], "--rep-grad applies to imtl, mgda only"),
        (["train", "--method", "sam", "--method-option", "radius=1"], "method 'sam' has no option 'radius'; its options are: rho"),
        (["train", "--method", "single", "--task", "middle", "--epochs", "1", "--data-option", "n_train=64",
          "--data-option", "n_test=32", "--no-progress"], "must be one of left, right, sum. Got 'middle'"),
        (["train", "--dgr", "--dgr-order", "during"], "The 'order' parameter of DGRConfig must be one of 'after', 'before'"),
        (["sweep", "/no/such.toml"], "sweep file '/no/such.toml' does not exist"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_traceback(capsys, args, message):
    code, out, err = run(capsys, *args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_train_from_the_command_line(tmp_path, capsys):
    code, out, err = run(
        capsys, "train", "--data-option", "n_train=256", "--data-option", "n_test=64", "--epochs", "1",
        "--dgr", "--dgr-estimator", "finite-diff", "--dgr-lambda", "0.05", "--out", str(tmp_path), "--no-progress",
    )
    assert code == 0, err
    run_dir = tmp_path / out.strip().split("/")[-1]
    assert run_dir.name.startswith("multidigits-ew-dgr-")
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    dgr = ckpt["train_config"]["dgr"]
    assert (dgr["estimator"], dgr["lam"]) == ("finite-diff", 0.05)
    assert ckpt["dataset"]["args"]["n_train"] == 256


def test_train_utkface_folder_from_the_command_line(tmp_path, capsys, utkface_dir):
    code, out, err = run(
        capsys, "train", "utkface", "--data-dir", str(utkface_dir), "--backbone", "test_resnet",
        "--data-option", "size=32", "--split-seed", "3", "--epochs", "1", "--batch-size", "8",
        "--out", str(tmp_path), "--no-progress",
    )
    assert code == 0, err
    ckpt = torch.load(tmp_path / out.strip().split("/")[-1] / "checkpoint.pt", weights_only=True)
    assert ckpt["dataset"]["args"] == dict(data_dir=str(utkface_dir), split_seed=3, size=32, test_fraction=0.2)
    assert ckpt["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert [t["num_classes"] for t in ckpt["tasks"]] == [7, 2, 5]
