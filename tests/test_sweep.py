"""repeval sweep / reproduce: grid expansion, resuming a killed sweep, refusing a changed plan."""

import json

import pytest
import torch

from repeval.app.cli import main
from repeval.errors import InvalidChoiceError, RepevalError
from repeval.training import run as run_files
from repeval.training.sweep import expand, read_sweep_file, run_sweep

TRAIN = {"dataset": "multidigits", "epochs": 2, "batch_size": 32, "dataset_args": {"n_train": 96, "n_test": 64},
         "progress": False}


def spec(name="s", **grid):
    return {"name": name, "train": dict(TRAIN), "grid": {"methods": ["ew"], "seeds": [0], **grid}}


def test_grid_expands_methods_dgr_lambdas_seeds_and_single_tasks():
    runs = expand(spec(methods=["single", "ew", "pcgrad"], dgr=[False, True], lambdas=[0.1, 0.3], seeds=[0, 1]))
    names = [r.name for r in runs]
    # single: one run per task and seed, never with DGR; others: (no DGR + 2 lambdas) x 2 seeds
    assert len(runs) == 3 * 2 + 2 * 3 * 2
    assert names[:2] == ["single-task=left-seed0", "single-task=left-seed1"] and "single-task=sum-seed1" in names
    assert "pcgrad+dgr-0.3-seed1" in names and "ew-seed0" in names
    by_name = {r.name: r.config for r in runs}
    assert by_name["single-task=right-seed1"].method_args == {"task": "right"}
    assert by_name["single-task=right-seed1"].dgr is None
    assert by_name["ew+dgr-0.1-seed0"].dgr.lam == 0.1 and by_name["ew+dgr-0.1-seed0"].seed == 0


def test_list_options_are_a_grid_axis_and_dgr_methods_limit_dgr():
    runs = expand({**spec(methods=["ew", "sam"], dgr=[False, True], lambdas=[0.1], dgr_methods=["ew"]),
                   "method_args": {"sam": {"base": ["ew", "cagrad"], "rho": 0.1}}})
    assert [r.name for r in runs] == [
        "ew-seed0", "ew+dgr-0.1-seed0", "sam-base=ew-rho=0.1-seed0", "sam-base=cagrad-rho=0.1-seed0",
    ]
    assert runs[3].config.method_args == {"base": "cagrad", "rho": 0.1} and runs[3].config.dgr is None


def test_any_training_option_is_a_grid_axis_named_in_the_run_folders():
    """arch x tasks x dgr_dummies: axes with one value are not named; runs without DGR do not
    multiply over DGR's options, single-task runs not over --tasks; every point's config is the
    [train] table with the axis values set."""
    runs = expand(spec(methods=["single", "ew"], dgr=[False, True], lambdas=[0.1], arch=["split", "mtan"],
                       tasks=["left", "left,sum"], dgr_dummies=[1, 3], lr=[1e-3]))
    by_name = {r.name: r.config for r in runs}
    assert len(runs) == 3 * 2 + 2 * 2 + 2 * 2 * 2  # single: task x arch; ew: arch x tasks (+ x dummies with DGR)
    assert "single-task=sum-arch=mtan-seed0" in by_name and "ew-arch=split-tasks=left+sum-seed0" in by_name
    config = by_name["ew+dgr-0.1-arch=mtan-tasks=left-dgr_dummies=3-seed0"]
    assert (config.arch, config.tasks, config.dgr.dummies, config.lr, config.epochs) == ("mtan", ("left",), 3, 1e-3, 2)
    assert by_name["single-task=sum-arch=mtan-seed0"].tasks is None
    assert all(c.lr == 1e-3 for c in by_name.values())


@pytest.mark.parametrize(("bad", "message"), [
    ({"grid": {"methods": ["ew"], "dgr": [True], "dgr_dummies": [0]}}, "The 'dummies' parameter of DGRConfig must be an int >= 1. Got 0"),
    ({"grid": {"methods": ["ew"], "lr": 0.1}}, r"\[grid\] lr must be a non-empty list of values"),
    ({"grid": {"methods": ["ew"], "tasks": ["left,size"]}}, "dataset 'multidigits' has no task 'size'; its tasks: left, right, sum"),
    ({"grid": {"methods": ["ew"], "arch": ["mtan", "unet"]}}, "unknown architecture 'unet'; choose from: mtan, split"),
    ({"grid": {"methods": ["ew"], "epochs": [1]}}, "'epochs' is set in \\[train\\] and is a \\[grid\\] axis; keep one"),
    ({"grid": {"methods": ["ew"], "out_dir": ["x"]}}, r"unknown \[grid\] key\(s\) \['out_dir'\]"),
    ({"grid": {"method": ["ew"]}}, r"unknown \[grid\] key\(s\) \['method'\]; allowed: methods, dgr, lambdas, seeds"),
    ({"extra": {}}, r"unknown sweep section\(s\) \['extra'\]"),
    ({"train": {**TRAIN, "seed": 3}}, r"\[train\] must not set 'seed'"),
    ({"grid": {"methods": ["ew", "ew"]}}, "repeats a run"),
    ({"grid": {"methods": ["nope"]}}, "unknown method 'nope'"),
    ({"grid": {"methods": ["ew"], "dgr_methods": ["uw"]}}, r"dgr_methods \['uw'\] are not among the methods"),
])
def test_bad_sweeps_are_refused_with_the_allowed_values(bad, message):
    with pytest.raises(InvalidChoiceError, match=message):
        expand({**spec(), **bad})


def test_sweep_file_reads_toml(tmp_path):
    path = tmp_path / "grid.toml"
    path.write_text('[train]\ndataset = "multidigits"\nepochs = 1\n[grid]\nmethods = ["ew", "uw"]\nseeds = [0, 1]\n')
    spec_ = read_sweep_file(path)
    assert spec_["name"] == "grid" and [r.name for r in expand(spec_)] == ["ew-seed0", "ew-seed1", "uw-seed0", "uw-seed1"]


def test_killed_sweep_continues_and_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    grid = spec(methods=["ew", "uw"])
    straight = run_sweep(grid, tmp_path / "a")

    real_save = run_files.save_epoch
    calls = {"n": 0}

    def save_then_die(run_dir, ckpt, state, metrics):
        real_save(run_dir, ckpt, state, metrics)
        calls["n"] += 1
        if calls["n"] == 3:  # ew finished (2 epochs), uw killed after its first epoch
            raise KeyboardInterrupt

    monkeypatch.setattr(run_files, "save_epoch", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(grid, tmp_path / "b")
    monkeypatch.setattr(run_files, "save_epoch", real_save)
    ew_checkpoint = tmp_path / "b" / "s" / "ew-seed0" / "checkpoint.pt"
    stamp = ew_checkpoint.stat().st_mtime_ns
    resumed = run_sweep(grid, tmp_path / "b")

    assert ew_checkpoint.stat().st_mtime_ns == stamp  # finished run skipped, not retrained
    for a, b in zip(straight, resumed):
        assert a.name == b.name
        ma, mb = run_files.read_metrics(a), run_files.read_metrics(b)
        assert [m["test_accuracy"] for m in ma] == [m["test_accuracy"] for m in mb]
        ca, cb = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (a, b))
        assert all(torch.equal(v, cb["encoder"][k]) for k, v in ca["encoder"].items())
    plan = json.loads((tmp_path / "b" / "s" / "sweep.json").read_text())
    assert list(plan["runs"]) == ["ew-seed0", "uw-seed0"] and "repeval_version" in plan
    assert [r.name for r in expand(read_sweep_file(tmp_path / "b" / "s" / "spec.json"))] == ["ew-seed0", "uw-seed0"]


def test_a_run_folder_from_another_plan_is_never_overwritten(tmp_path):
    run_sweep(spec(), tmp_path)
    changed = spec()
    changed["train"]["epochs"] = 3
    with pytest.raises(RepevalError, match="was made with a different config"):
        run_sweep(changed, tmp_path)


def test_reproduce_smoke_runs_every_row_of_the_protocol(tmp_path, utkface_dir, capsys):
    assert main(["reproduce", "utkface", "--data-dir", str(utkface_dir), "--smoke", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "utkface-paper-smoke" / "report" / "report.json").read_text())
    labels = [r["label"] for r in report["rows"]]
    assert labels[:3] == ["single", "ew", "ew + DGR (λ=1e-06)"]
    assert {"cagrad + SAM", "ew + PTA", "nash + DGR (λ=1e-06)", "autol", "nash + PTA"} <= set(labels)
    assert len(labels) == 1 + 8 * 2 + 2 * 4 and not any("SAM + DGR" in label for label in labels)
    dgr = report["rows"][2]["runs"][0]["config"]["dgr"]
    assert (dgr["penalty"], dgr["estimator"], dgr["eps"], dgr["dummies"]) == ("squared", "finite-diff", 1e-4, 3)
    assert len(report["single_task_baseline"]["runs"]) == 3


def test_reproduce_without_weights_or_with_an_unknown_protocol_is_refused(tmp_path, capsys):
    assert main(["reproduce", "utkface", "--data-dir", str(tmp_path)]) == 2
    assert "pass --pretrained-file PATH" in capsys.readouterr().err
    assert main(["reproduce", "mnist", "--data-dir", str(tmp_path), "--smoke"]) == 2
    assert "must be one of 'utkface', 'nyuv2', 'cityscapes', 'sensitivity'. Got 'mnist'" in capsys.readouterr().err


# Both protocols share the scene pipeline; CI runs NYUv2's (Cityscapes' layout is covered by the
# dataset and reliability tests), the suite's time budget keeps the second for `-m slow`.
@pytest.mark.parametrize("protocol", ["nyuv2", pytest.param("cityscapes", marks=pytest.mark.slow)])
def test_reproduce_scene_smoke_runs_the_split_grid_on_generated_data(tmp_path, protocol, capsys):
    assert main(["reproduce", protocol, "--smoke", "--out", str(tmp_path), "--no-progress"]) == 0
    for arch in ("mtan", "split"):  # the two halves of Tables 2-3, a report each
        report = json.loads((tmp_path / f"{protocol}-tables-smoke" / f"report-{arch}" / "report.json").read_text())
        labels = [r["label"] for r in report["rows"]]
        assert labels[:3] == ["single", "ew", "ew + DGR (λ=0.1)"] and len(labels) == 1 + 8 * 2
        assert {r["config"]["arch"] for row in report["rows"] for r in row["runs"]} == {arch}
    config = report["rows"][2]["runs"][0]["config"]
    assert (config["optimizer"], config["schedule"], config["dataset"]) == ("sgd", "cosine", protocol)
    assert (config["dgr"]["penalty"], config["dgr"]["estimator"], config["dgr"]["eps"]) == ("squared", "finite-diff", 1e-3)
    tasks = {"nyuv2": ["seg", "depth", "normal"], "cityscapes": ["seg", "part_seg", "disp"]}[protocol]
    assert sorted(r["config"]["method_args"]["task"] for r in report["rows"][0]["runs"]) == sorted(tasks)
    from repeval.training.reproduce import scene_spec

    spec, baseline = scene_spec(protocol, "D")
    assert baseline == f"autolambda-{protocol}" and spec["train"]["aspp_rates"] == "12,24,36"
    assert spec["train"]["epochs"] == 300 and spec["grid"]["seeds"] == [0, 1, 2]


def test_the_example_sweeps_expand():
    from pathlib import Path

    examples = sorted((Path(__file__).parent.parent / "sweeps").glob("*.toml"))
    assert examples
    for path in examples:
        runs = expand(read_sweep_file(path))
        assert len(runs) == len({r.name for r in runs}) > 0


def test_runs_made_before_newer_options_existed_still_match_their_plan(tmp_path):
    """A config.json without the options added later (optimizer, schedule, ASPP, fd_scheme) is the
    same run as one planned now: the sweep neither refuses nor restarts it."""
    from repeval.training.sweep import run_status
    from repeval.training.config import DGRConfig, TrainConfig

    config = TrainConfig(dataset="multidigits", epochs=1, dgr=DGRConfig(lam=0.1))
    run_dir = tmp_path / "old"
    run_dir.mkdir()
    run_files.write_config(run_dir, config.resolved(), {})
    stored = json.loads((run_dir / "config.json").read_text())
    for key in ("optimizer", "schedule", "aspp_width", "aspp_rates"):
        stored["config"].pop(key)
    stored["config"]["dgr"].pop("fd_scheme")
    (run_dir / "config.json").write_text(json.dumps(stored))
    assert run_status(run_dir, config) == "partial"
    assert run_files.read_config(run_dir).optimizer == "adam"


def test_reproduce_sensitivity_smoke_writes_table_4(tmp_path, capsys):
    """Table 4 on scenes, one tiny seed: 4(a)'s dummy counts and task counts in the paper's
    layout (Delta_MTL over each row's own tasks), and 4(b) on a Swin backbone."""
    assert main(["reproduce", "sensitivity", "--dataset", "scenes", "--smoke", "--out", str(tmp_path), "--no-progress"]) == 0
    table = json.loads((tmp_path / "scenes-table4a-dummies-smoke" / "table4a.json").read_text())
    rows = {r["setting"]: r for r in table["rows"]}
    assert list(rows) == ["d=1", "d=3", "d=5", "(1) seg", "(2) seg+depth", "(3) seg+depth+normal"]
    assert all(r["vanilla"] is not None and r["dgr"] is not None for r in rows.values())
    assert rows["d=3"]["dgr"] == rows["(3) seg+depth+normal"]["dgr"] and rows["d=1"]["vanilla"] == rows["d=5"]["vanilla"]
    report = json.loads((tmp_path / "scenes-table4a-dummies-smoke" / "report" / "report.json").read_text())
    one_task = [r for r in report["rows"] if r["label"] == "ew tasks=seg"][0]
    single_seg = [r for r in report["rows"] if r["method"] == "single"][0]["mean"]["seg miou"]
    assert one_task["delta_mtl"] == pytest.approx((one_task["mean"]["seg miou"] - single_seg) / single_seg)
    swin = json.loads((tmp_path / "scenes-table4b-swin-smoke" / "report" / "report.json").read_text())
    assert {r["config"]["backbone"] for row in swin["rows"] for r in row["runs"]} == {"swin_tiny_patch4_window7_224"}
    assert [r["label"] for r in swin["rows"]] == ["single", "ew", "ew + DGR (λ=0.1)"]


def test_sweep_refuses_to_run_under_torchrun(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(InvalidChoiceError, match="repeval sweep does not run under torchrun: start several"):
        run_sweep(spec(), tmp_path)
    assert not any(tmp_path.iterdir())
