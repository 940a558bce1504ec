"""The second reliability round: damaged data files, damaged checkpoints and train states, plans
refused before any folder exists, sizes bounded, and options that would do nothing refused. Each
answers with one line naming the bad thing, exit 2, and creates nothing."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from repeval import datasets
from repeval.app.cli import main
from repeval.datasets.scan import scan
from repeval.errors import DataError
from repeval.kinds import KINDS, kind_of
from repeval.tasks import TaskSpec
from tests.fixtures import make_cityscapes_folder, make_imagefolder, make_nyuv2_folder, make_pascal_folder


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _npy(path: Path, change) -> None:
    np.save(path, change(np.load(path)))


# Per folder dataset: how to build its fixture (options), and each corruption of training sample
# 1 -> (the file it damages, what the error must say). Sample 0 stays good: it is read at build.
def _nyuv2(root: Path) -> Path:
    return make_nyuv2_folder(root, n_train=3, n_test=2, size=16)


NYU = "train/{}/1.npy"
CORRUPTIONS = {
    "nyuv2": (_nyuv2, {}, {
        "truncated": (lambda d: _truncate(d / NYU.format("depth")), NYU.format("depth"), "cannot be read as .npy"),
        "2-D image": (lambda d: _npy(d / NYU.format("image"), lambda a: a[..., 0]), NYU.format("image"), "expected an image [H, W, 3]"),
        "another shape": (lambda d: [_npy(d / NYU.format(f), lambda a: a[:8]) for f in ("image", "label", "depth", "normal")],
                          NYU.format("image"), "image of uint8 [3, 8, 16]; expected uint8 [3, 16, 16] (sample 0's)"),
        "NaN image": (lambda d: _npy(d / NYU.format("image"), lambda a: a * np.nan), NYU.format("image"), "non-finite pixel values"),
        "0..255 image": (lambda d: _npy(d / NYU.format("image"), lambda a: a * 255), NYU.format("image"), "(0..255-scaled?)"),
        "label above the classes": (lambda d: _npy(d / NYU.format("label"), lambda a: a + 13), NYU.format("label"),
                                    "the seg target has class ids"),
        "fractional label": (lambda d: _npy(d / NYU.format("label"), lambda a: a + 0.5), NYU.format("label"), "not whole numbers"),
        "NaN depth": (lambda d: _npy(d / NYU.format("depth"), lambda a: a * np.nan), NYU.format("depth"),
                      "the depth target has non-finite values"),
        "negative depth": (lambda d: _npy(d / NYU.format("depth"), lambda a: a - 100), NYU.format("depth"), "negative values"),
    }),
    "cityscapes": (make_cityscapes_folder, {}, {
        "corrupt PNG": (lambda d: (d / "train/seg/1.png").write_bytes(b"\x89PNG\r\n garbage"), "train/seg/1.png",
                        "is not a readable image"),
        "truncated PNG": (lambda d: _truncate(d / "train/image/1.png"), "train/image/1.png", "is not a readable image"),
    }),
    "pascal": (make_pascal_folder, {"size": 32}, {
        "corrupt JPEG": (lambda d: (d / "JPEGImages/2008_000001.jpg").write_bytes(b"\xff\xd8 nope"),
                         "JPEGImages/2008_000001.jpg", "is not a readable image"),
        "corrupt .mat": (lambda d: (d / "human_parts/2008_000001.mat").write_bytes(b"MATLAB 5.0 nope"),
                         "human_parts/2008_000001.mat", "is not a readable .mat file"),
        "context labels of another size": (
            lambda d: __import__("scipy.io").io.savemat(d / "pascal-context/trainval/2008_000001.mat",
                                                       {"LabelMap": np.zeros((8, 8), np.uint16)}),
            "pascal-context/trainval/2008_000001.mat", "is [8, 8]; its image is [32, 32]"),
    }),
    "imagefolder": (make_imagefolder, {"size": 16}, {
        "corrupt image": (lambda d: (d / "train/dog/0.png").write_bytes(b"\x89PNG nope"), "train/dog/0.png", "is not a readable image"),
    }),
}
CASES = [(name, corruption) for name, (_, _, found) in CORRUPTIONS.items() for corruption in found]


def test_every_folder_dataset_has_corruption_cases():
    # UTKFace's protocol leaves undecodable files out and reports them (tested below).
    assert set(CORRUPTIONS) == set(datasets.NEEDS_DATA_DIR) - {"utkface"}


def _sample_of(split, file: str) -> int:
    paths = split.paths if hasattr(split, "paths") else None
    if paths is not None:
        return next(i for i, p in enumerate(paths) if p.endswith(file))
    return next(i for i in range(len(split)) if any(str(f).endswith(file) for f in split.source.files(i)))


@pytest.mark.parametrize(("name", "corruption"), CASES, ids=[f"{n}: {c}" for n, c in CASES])
def test_a_damaged_sample_is_refused_naming_its_file_and_check_data_lists_it(tmp_path, name, corruption):
    make, options, corruptions = CORRUPTIONS[name]
    folder = make(tmp_path / name)
    damage, file, message = corruptions[corruption]
    damage(folder)
    bundle = datasets.build(name, data_dir=str(folder), **options)
    index = _sample_of(bundle.train, file)
    with pytest.raises(DataError) as error:
        bundle.train[index]
    assert str(folder / file) in str(error.value) and message in str(error.value)
    result = scan(bundle)
    assert len(result.problems) == 1 and str(folder / file) in result.problems[0]
    assert result.samples == {"train": len(bundle.train), "test": len(bundle.test)}


def test_a_bad_sample_read_in_a_dataloader_worker_ends_training_in_one_line(tmp_path, capsys):
    folder = _nyuv2(tmp_path / "nyu")
    _npy(folder / "train/label/2.npy", lambda a: a + 20)
    out = tmp_path / "runs"
    code = main(["train", "nyuv2", "--data-dir", str(folder), "--backbone", "test_resnet", "--aspp-width", "4",
                 "--epochs", "1", "--batch-size", "3", "--num-workers", "1", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith(f"error: '{folder / 'train/label/2.npy'}': the seg target has class ids 19..")


def test_check_data_reports_every_bad_file_and_exits_1(tmp_path, capsys):
    folder = _nyuv2(tmp_path / "nyu")
    assert main(["check-data", "nyuv2", "--data-dir", str(folder), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == "checked 5 samples (3 train, 2 test): no problem found"
    _truncate(folder / "train/image/1.npy")
    _npy(folder / "val/normal/1.npy", lambda a: np.full_like(a, np.inf))
    assert main(["check-data", "nyuv2", "--data-dir", str(folder), "--no-progress"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith(f"train: '{folder / 'train/image/1.npy'}' cannot be read as .npy")
    assert lines[1] == f"test: '{folder / 'val/normal/1.npy'}': the normal target has non-finite values"
    assert lines[2] == "checked 5 samples (3 train, 2 test): 2 bad sample(s)"


def test_check_data_lists_the_files_utkface_leaves_out(utkface_dir, capsys):
    assert main(["check-data", "utkface", "--data-dir", str(utkface_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "left out: 30_1_2_20170116000000001.jpg.chip.jpg: does not decode" in out
    assert "left out: 39_1_20170116174525125.jpg.chip.jpg: name does not parse" in out
    assert "no problem found; 5 file(s) left out by the dataset's protocol" in out


@pytest.mark.parametrize("name", KINDS.names())
def test_every_kind_refuses_non_finite_targets_and_accepts_its_invalid_value(name):
    kind = kind_of(TaskSpec("t", 3 if name in ("classification", "segmentation", "normals") else 1, kind=name))
    good = np.zeros((4, 4), dtype=np.float32)
    good[0, 0] = kind.invalid_value if name != "classification" else 0
    assert kind.target_problem(good) is None
    assert kind.target_problem(np.full((4, 4), np.nan, dtype=np.float32)) is not None
    if kind.target_is_index:
        bad = good.astype(np.int64)
        bad[1, 1] = 3
        assert "class ids 3..3 (1 values); expected 0..2" in kind.target_problem(bad)


# --- checkpoints and train states ----------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny SPLIT classification run, an MTAN one and a dense one."""
    from repeval.training.config import TrainConfig
    from repeval.training.loop import train

    root = tmp_path_factory.mktemp("trained")
    previous = os.environ.get("REPEVAL_CACHE_DIR")
    os.environ["REPEVAL_CACHE_DIR"] = str(root / "cache")
    small = dict(dataset="multidigits", dataset_args=dict(n_train=64, n_test=32), epochs=1, batch_size=32, progress=False)
    runs = {
        "split": train(TrainConfig(**small), run_dir=root / "split"),
        "mtan": train(TrainConfig(**small, arch="mtan"), run_dir=root / "mtan"),
        "dense": train(TrainConfig(dataset="scenes", dataset_args=dict(n_train=8, n_test=4, size=32), epochs=1, batch_size=4,
                                   aspp_width=4, progress=False), run_dir=root / "dense"),
    }
    if previous is None:
        os.environ.pop("REPEVAL_CACHE_DIR")
    else:
        os.environ["REPEVAL_CACHE_DIR"] = previous
    return runs


def _first_float(sd: dict, dim: int | None = None) -> str:
    return next(k for k, v in sd.items() if v.is_floating_point() and (dim is None or v.dim() == dim))


def _set(ckpt, part, value):
    ckpt[part] = value


CHECKPOINT_DAMAGE = {
    "NaN weights": (lambda c: c["encoder"][_first_float(c["encoder"])].fill_(float("nan")), "holds non-finite weights (encoder"),
    "inf head weights": (lambda c: next(iter(c["heads"].values()))["0.weight"].fill_(float("inf")), "holds non-finite weights (heads"),
    "no heads": (lambda c: c.pop("heads"), "is a damaged repeval checkpoint: 'heads' is missing, expected a dict"),
    "tasks not a list": (lambda c: _set(c, "tasks", "left"), "'tasks' is str, expected a list"),
    "a missing key": (lambda c: c["encoder"].pop(_first_float(c["encoder"])), "its weights do not fit the model its config describes"),
    "a wrong shape": (lambda c: c["encoder"].update({(k := _first_float(c["encoder"], 4)): c["encoder"][k][:1]}), "size mismatch"),
    "heads of other tasks": (lambda c: c["heads"].update(extra=c["heads"]["left"]), "it has heads for"),
}


def _damaged_copy(run: Path, where: Path, damage) -> Path:
    shutil.copytree(run, where)
    ckpt = torch.load(where / "checkpoint.pt", weights_only=True)
    damage(ckpt)
    torch.save(ckpt, where / "checkpoint.pt")
    return where


def _one_line_exit_2(args: list[str], capsys, root: Path) -> str:
    before = sorted(root.rglob("*"))
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "Traceback" not in err[0], err
    assert sorted(root.rglob("*")) == before, "a refusal created or removed files"
    return err[0]


@pytest.mark.parametrize("damage", list(CHECKPOINT_DAMAGE))
@pytest.mark.parametrize("command", ["probe", "universality", "tsne"])
def test_every_checkpoint_reader_refuses_a_damaged_checkpoint(trained, tmp_path, capsys, command, damage):
    change, message = CHECKPOINT_DAMAGE[damage]
    run = _damaged_copy(trained["split"], tmp_path / "run", change)
    err = _one_line_exit_2([command, str(run), "--out", str(tmp_path / "out")], capsys, tmp_path)
    assert str(run / "checkpoint.pt") in err and message in err


@pytest.mark.parametrize("file", ["truncated", "a pickle"])
def test_unreadable_checkpoints_are_refused_without_unpickling(trained, tmp_path, capsys, file):
    run = tmp_path / "run"
    shutil.copytree(trained["split"], run)
    if file == "truncated":
        _truncate(run / "checkpoint.pt")
    else:
        (run / "checkpoint.pt").write_bytes(pickle.dumps(Path("/")))  # any non-tensor object
    err = _one_line_exit_2(["probe", str(run), "--out", str(tmp_path / "out")], capsys, tmp_path)
    assert "is not a repeval checkpoint" in err


def test_dense_probe_refuses_a_damaged_checkpoint_before_reading_data(trained, tmp_path, capsys):
    run = _damaged_copy(trained["dense"], tmp_path / "run", CHECKPOINT_DAMAGE["a wrong shape"][0])
    assert "size mismatch" in _one_line_exit_2(["probe", str(run), "--out", str(tmp_path / "out")], capsys, tmp_path)


def _evil_pickle(path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch PWNED",))

    path.write_bytes(pickle.dumps(Evil()))


STATE_DAMAGE = {
    "truncated": (_truncate, "is not a train state the run can resume from (cannot be read"),
    "a hostile pickle": (_evil_pickle, "which repeval never unpickles"),
    "no optimizer": (lambda p: torch.save({**torch.load(p, weights_only=True), "optimizer": None}, p),
                     "is damaged: its 'optimizer' is NoneType"),
    "a foreign optimizer": (lambda p: torch.save({**torch.load(p, weights_only=True), "optimizer": {"state": {}, "param_groups": []}}, p),
                            "its saved state does not fit its config"),
}


@pytest.mark.parametrize("damage", list(STATE_DAMAGE))
def test_resume_refuses_a_damaged_train_state(trained, tmp_path, capsys, monkeypatch, damage):
    change, message = STATE_DAMAGE[damage]
    run = tmp_path / "run"
    shutil.copytree(trained["split"], run)
    change(run / "train_state.pt")
    monkeypatch.chdir(tmp_path)
    err = _one_line_exit_2(["train", "--resume", str(run), "--epochs", "2", "--no-progress"], capsys, tmp_path)
    assert message in err and not (tmp_path / "PWNED").exists()


# --- refusals that create nothing ------------------------------------------------------------

def _sweep_file(root: Path, name: str, spec: dict) -> str:
    path = root / f"{name}.json"
    path.write_text(json.dumps(spec))
    return str(path)


SMALL = {"dataset": "multidigits", "epochs": 1, "dataset_args": {"n_train": 64, "n_test": 32}}
REFUSALS = [
    # sweeps: the whole plan (data folders, weights, every point, what would be ignored) first
    ({"train": {"dataset": "nyuv2", "data_dir": "{root}/missing", "epochs": 1}}, [], "nyuv2 folder '{root}/missing' does not exist"),
    ({"train": {**SMALL, "pretrained_file": "{root}/notes.txt"}}, [], "cannot be read as a state dict"),
    ({"train": {"epochs": 1}, "grid": {"dataset": ["multidigits", "scenes"]}}, [],
     "the sweep's runs use 2 datasets (multidigits, scenes) and its report covers one"),
    ({"train": SMALL, "grid": {"lr": []}}, [], "[grid] lr must be a non-empty list"),
    ({"train": SMALL, "grid": {"dgr_dummies": [1, 2]}}, [], "[grid] dgr_dummies set(s) DGR, but the sweep trains no DGR run"),
    ({"train": SMALL, "dgr": {"penalty": "squared"}}, [], "[dgr] set(s) DGR, but the sweep trains no DGR run"),
    ({"train": SMALL, "grid": {"lr": [1e-3 * (i + 1) for i in range(1000)], "hidden": list(range(1, 1001))}}, [],
     "the sweep grid has up to 2,000,000 runs; a sweep holds at most 10,000"),
    ({"train": {**SMALL, "aspp_width": 8}}, [], "--aspp-width sets the dense tasks' heads; dataset 'multidigits' has none"),
    ({"train": {**SMALL, "epochs": 10**12}}, [], "The 'epochs' parameter of TrainConfig must be an int >= 1 and <= 100000"),
]
COMMAND_REFUSALS = [
    (["reproduce", "utkface", "--data-dir", "{root}/missing", "--smoke"], "UTKFace folder '{root}/missing' does not exist"),
    (["reproduce", "nyuv2", "--data-dir", "{root}/missing", "--smoke"], "nyuv2 folder '{root}/missing' does not exist"),
    (["reproduce", "sensitivity", "--dataset", "cityscapes", "--data-dir", "{root}/missing"], "cityscapes folder '{root}/missing' does not exist"),
    (["train", "--epochs", "1000000000000"], "The 'epochs' parameter of TrainConfig must be an int >= 1 and <= 100000"),
    (["train", "--aspp-rates", "3,6"], "--aspp-rates sets the dense tasks' heads; dataset 'multidigits' has none"),
    (["train", "scenes", "--aspp-rates", "100000000000000000000"], "--aspp-rates must be 'auto' or comma-separated ints >= 1 and <= 1024"),
    (["train", "scenes", "--aspp-width", "100000000"], "The 'aspp_width' parameter of TrainConfig must be an int >= 1 and <= 4096"),
    (["train", "imagefolder", "--data-dir", "{root}", "--data-option", "size=100000"], "The 'size' parameter of ImageFolder must be an int >= 8 and <= 8192"),
    (["train", "imagefolder", "--data-dir", "{imagefolder}", "--data-option", "size=8192", "--batch-size", "4096"],
     "a batch of 4096 images of 8192x8192 needs at least"),
    (["probe", "--timm", "test_resnet", "--dataset", "scenes"], "--timm measures per-image embeddings; dataset 'scenes' has dense tasks"),
    (["universality", "--timm", "test_resnet", "--dataset", "scenes"], "--timm measures per-image embeddings"),
    (["probe", "--timm", "test_resnet", "--dataset", "multidigits", "--data-dir", "{root}"], "dataset 'multidigits' is embedded and reads no --data-dir"),
    (["probe", "{split}", "--data-dir", "{root}"], "was trained on the embedded dataset 'multidigits', which reads no --data-dir"),
    (["probe", "{dense}", "--classifiers", "svm"], "--classifiers set(s) the per-image probes, which dense checkpoints do not get"),
    (["probe", "{dense}", "--tsne"], "--tsne set(s) the per-image probes"),
    (["universality", "{mtan}", "--head", "trained"], "--head trained needs a SPLIT repeval checkpoint"),
    (["compare", "--a", "{split}", "--b", "{dense}"], "group A ran on dataset 'multidigits' and group B on 'scenes'"),
    (["compare", "--a", "{split}", "--b", "{split}"], "is in both groups; B − A of a run with itself is 0 by construction"),
    (["check-data", "nyuv2"], "dataset 'nyuv2' needs --data-dir"),
    (["train", "--dgr-lambda", "0.5", "--dgr-estimator", "finite-diff"],
     "--dgr-lambda, --dgr-estimator only act(s) with --dgr, which is off: add --dgr, or leave it out"),
    (["probe", "{split}", "--head", "mlp"], "--head only act(s) with --universality, which is off"),
    (["probe", "{split}", "--pretrained-file", "{root}/notes.txt"], "--pretrained-file set(s) what --timm measures"),
    (["universality", "{split}", "--dataset", "scenes"], "--dataset set(s) what --timm measures"),
    (["check-data", "scenes", "--data-dir", "{root}"], "dataset 'scenes' is embedded and reads no --data-dir"),
]


@pytest.fixture
def work(tmp_path, monkeypatch, trained):
    root = tmp_path / "work"
    root.mkdir()
    (root / "notes.txt").write_text("not weights")
    images = make_imagefolder(tmp_path / "imagefolder")
    monkeypatch.chdir(root)
    return root, {"root": str(root), "imagefolder": str(images), **{k: str(v) for k, v in trained.items()}}


@pytest.mark.parametrize(("spec", "extra", "message"), REFUSALS, ids=[m[:50] for _, _, m in REFUSALS])
def test_a_refused_sweep_creates_nothing(work, capsys, spec, extra, message):
    root, names = work
    spec = json.loads(json.dumps(spec).replace("{root}", names["root"]))
    path = _sweep_file(root, "plan", spec)
    err = _one_line_exit_2(["sweep", path, "--out", str(root / "sweeps"), "--no-progress", *extra], capsys, root)
    assert message.format(**names) in err


@pytest.mark.parametrize(("args", "message"), COMMAND_REFUSALS, ids=[" ".join(a)[:50] for a, _ in COMMAND_REFUSALS])
def test_a_refused_command_creates_nothing(work, capsys, args, message):
    root, names = work
    err = _one_line_exit_2([a.format(**names) for a in args] + ["--out", str(root / "out")] * (args[0] != "check-data"),
                           capsys, root)
    assert message.format(**names) in err


def test_sweep_dry_run_prints_the_plan_and_its_size_and_creates_nothing(work, capsys):
    root, _ = work
    path = _sweep_file(root, "plan", {"train": SMALL, "grid": {"methods": ["ew", "pcgrad"], "seeds": [0, 1]}})
    before = sorted(root.rglob("*"))
    assert main(["sweep", path, "--out", str(root / "sweeps"), "--dry-run"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[:4] == [f"{m}-seed{s}  (multidigits, 1 epochs, new)" for m in ("ew", "pcgrad") for s in (0, 1)]
    assert lines[4] == "4 runs, 4 epochs in all, 4 still to train; nothing was created"
    assert sorted(root.rglob("*")) == before


def test_a_sweep_with_a_bad_point_fails_before_its_first_run(work, capsys):
    # The second point's data folder is missing: nothing may train, no folder may appear.
    root, names = work
    folder = _nyuv2(root / "nyu")
    spec = {"train": {"dataset": "nyuv2", "epochs": 1, "backbone": "test_resnet", "aspp_width": 4},
            "grid": {"data_dir": [str(folder), str(root / "missing")]}}
    err = _one_line_exit_2(["sweep", _sweep_file(root, "plan", spec), "--out", str(root / "sweeps")], capsys, root)
    assert f"nyuv2 folder '{root / 'missing'}' does not exist" in err
