"""`repeval reproduce utkface|nyuv2|cityscapes|sensitivity`: the paper's protocols as resumable
sweeps (Table 4, `sensitivity`, is in `repeval.training.sensitivity`).

UTKFace, Table 1 and Figure 2:

Table 1: single-task baselines, and EW, DWA, UW, Auto-lambda, PCGrad, CAGrad, IMTL, Nash-MTL,
each alone and with DGR in the authors' reading (squared penalty, finite differences with
eps = 1e-4, 3 dummies, lambda in {1e-5, 1e-6, 1e-7}). Figure 2: SAM and PTA alone (around EW)
and around the three best methods of Table 1 (Auto-lambda, CAGrad, Nash-MTL); DGR on those is
already in Table 1. 3 seeds; ResNet-50 from a local ImageNet weights file; 64x64 inputs; Adam
lr 1e-5, batch 64, 100 epochs, step decay (StepLR every third of training, gamma 0.5). That is
(3 + 8 x 4 + 8) x 3 = 129 runs: days on one GPU. `smoke=True` keeps the grid's shape on tiny
settings (one seed, one lambda, one epoch, a small test network, 32x32) to check the pipeline.
"""

from __future__ import annotations

import logging
from pathlib import Path

from repeval.errors import InvalidChoiceError

log = logging.getLogger("repeval")

TABLE1_METHODS = ["single", "ew", "dwa", "uw", "autol", "pcgrad", "cagrad", "imtl", "nash"]
FIGURE2_METHODS = ["sam", "pta"]
FIGURE2_BASES = ["ew", "autol", "cagrad", "nash"]
PAPER_DGR = {"penalty": "squared", "estimator": "finite-diff", "eps": 1e-4, "dummies": 3}
PROTOCOLS = ("utkface", "nyuv2", "cityscapes", "sensitivity")
# Tables 2-3 (SPLIT): the Auto-lambda/DGR scene recipe for every method (dilated ResNet-50 from
# scratch, DeepLabv3 heads with the reference ASPP rates, SGD 0.1 with momentum and cosine
# schedule, weight decay 1e-4, batch 4, 300 epochs: the DGR code's defaults), and DGR as its
# scene code runs it (squared penalty, the "authors" finite-difference scheme: one-sided, each
# dummy set stepped along its joint gradient, eps 1e-3, weight 0.1; 3 dummies per task as the
# paper states). `repeval sweep` with `[dgr] fd_scheme = "forward"` runs the per-task scheme. Single-task runs of each task are in the grid; the report's Delta_MTL
# is against Auto-lambda's published STL numbers, as the paper's tables are.
SCENE_METHODS = ["single", "ew", "dwa", "uw", "autol", "pcgrad", "cagrad", "imtl", "nash"]
SCENE_DGR = {"penalty": "squared", "estimator": "finite-diff", "fd_scheme": "authors", "eps": 1e-3, "dummies": 3}
SCENE_BASELINES = {"nyuv2": "autolambda-nyuv2", "cityscapes": "autolambda-cityscapes"}
SCENE_ARCHS = ("split", "mtan")  # each gets its own report: the two halves of Tables 2-3


def utkface_spec(data_dir: str | Path, pretrained_file: str | Path | None, smoke: bool = False) -> dict:
    """The sweep spec of the paper's UTKFace protocol (see `training.sweep` for the format)."""
    if not smoke and pretrained_file is None:
        raise InvalidChoiceError(
            "the paper's protocol starts from ImageNet weights: pass --pretrained-file PATH (a timm resnet50 "
            "state dict), or --smoke for the tiny pipeline check"
        )
    train = {
        "dataset": "utkface", "data_dir": str(data_dir), "dataset_args": {"split_seed": 0, "size": 64},
        "backbone": "resnet50", "pretrained_file": None if pretrained_file is None else str(pretrained_file),
        "lr": 1e-5, "batch_size": 64, "epochs": 100, "lr_gamma": 0.5,
        "head_relu": True,  # the authors' task and dummy heads put a ReLU on the logits (MultNN.py)
    }
    grid = {"methods": TABLE1_METHODS + FIGURE2_METHODS, "dgr": [False, True], "lambdas": [1e-5, 1e-6, 1e-7],
            "seeds": [0, 1, 2], "dgr_methods": TABLE1_METHODS[1:]}
    bases = {name: {"base": FIGURE2_BASES} for name in FIGURE2_METHODS}
    if smoke:
        train.update(backbone="test_resnet", pretrained_file=None, lr=1e-3, batch_size=16, epochs=1,
                     dataset_args={"split_seed": 0, "size": 32})
        grid.update(lambdas=[1e-6], seeds=[0])
    return {"name": "utkface-paper-smoke" if smoke else "utkface-paper", "train": train, "grid": grid,
            "dgr": dict(PAPER_DGR), "method_args": bases}


def scene_train(dataset: str, data_dir: str | Path | None, smoke: bool) -> dict:
    """The [train] table of the scene protocols: the Auto-lambda/DGR recipe on nyuv2 and
    cityscapes; on the embedded `scenes` its CPU defaults with 4 epochs; `smoke`: tiny."""
    if dataset == "scenes":
        return {"dataset": "scenes", "dataset_args": {"split_seed": 0, **({"n_train": 16, "n_test": 8} if smoke else {})},
                "epochs": 1 if smoke else 4}
    train = {
        "dataset": dataset, "data_dir": str(data_dir), "dataset_args": {"split_seed": 0},
        "backbone": "resnet50", "optimizer": "sgd", "lr": 0.1, "schedule": "cosine", "weight_decay": 1e-4,
        "batch_size": 4, "epochs": 300, "aspp_width": 256, "aspp_rates": "12,24,36",
    }
    if smoke:
        train.update(backbone="test_resnet", epochs=1, batch_size=2, aspp_width=8, aspp_rates="auto", lr=0.01)
    return train


def scene_spec(dataset: str, data_dir: str | Path, smoke: bool = False) -> tuple[dict, str | None]:
    """The sweep spec of Table 2 (nyuv2) or Table 3 (cityscapes), SPLIT and MTAN halves, and the
    published baseline its reports use (None for `smoke`, whose Delta_MTL is against its own
    single runs). `smoke` keeps the grid's methods on tiny settings (one seed, one epoch)."""
    grid = {"methods": SCENE_METHODS, "dgr": [False, True], "lambdas": [0.1], "seeds": [0] if smoke else [0, 1, 2],
            "dgr_methods": SCENE_METHODS[1:], "arch": list(SCENE_ARCHS)}
    name = f"{dataset}-tables{'-smoke' if smoke else ''}"
    return ({"name": name, "train": scene_train(dataset, data_dir, smoke), "grid": grid, "dgr": dict(SCENE_DGR)},
            None if smoke else SCENE_BASELINES[dataset])


def smoke_data(dataset: str, folder: Path) -> Path:
    """Tiny synthetic data in `dataset`'s on-disk layout, for `reproduce --smoke` without a
    --data-dir: rendered scenes in NYUv2's layout, random samples in Cityscapes'."""
    folder = Path(folder)
    if (folder / "val").is_dir():
        return folder
    staging = folder.with_name(folder.name + ".partial")
    if dataset == "nyuv2":
        from repeval.datasets.scenes import export_nyuv2_layout, render_split

        for split, stream, n in (("train", 0, 8), ("val", 1, 4)):
            export_nyuv2_layout(render_split(0, stream, n, 32), staging / split)
    else:
        from repeval.datasets.cityscapes import write_synthetic

        write_synthetic(staging, "dgr", n_train=8, n_test=4, height=32, width=64)
    staging.rename(folder)
    return folder


def run_protocol(protocol: str, data_dir, out: Path, smoke: bool = False, progress: bool = False,
                 pretrained_file=None, dataset: str | None = None, table: str = "all") -> list[tuple[str, str]]:
    """Run a protocol's sweeps (resumable) and write their reports: [(where, Markdown)].
    Inputs are checked before any folder is made."""
    from repeval.errors import check_choice

    check_choice("reproduce", "protocol", protocol, PROTOCOLS)
    if protocol == "sensitivity":
        from repeval.training.sensitivity import SENSITIVITY_DATASETS, TABLES, run_sensitivity

        check_choice("reproduce sensitivity", "dataset", dataset, SENSITIVITY_DATASETS)
        check_choice("reproduce sensitivity", "table", table, TABLES)
        if dataset != "scenes" and data_dir is None and not smoke:
            raise InvalidChoiceError(f"reproduce sensitivity --dataset {dataset} needs --data-dir (the folder that holds its files)")
        if dataset != "scenes" and data_dir is None:
            data_dir = smoke_data(dataset, _made(out) / f"{dataset}-smoke-data")
        return run_sensitivity(dataset, data_dir, Path(out), smoke, table, progress,
                               None if pretrained_file is None else str(pretrained_file))
    if data_dir is None and not (smoke and protocol != "utkface"):
        raise InvalidChoiceError(f"reproduce {protocol} needs --data-dir (the folder that holds its files)")
    from repeval.training.sweep_plan import plan_sweep

    if protocol == "utkface":
        spec = utkface_spec(data_dir, pretrained_file, smoke=smoke)
        runs = plan_sweep(spec)  # data folder, weights file and every run's config, before any folder
        return sweep_and_report(spec, _made(out), progress, runs=runs)
    if data_dir is None:
        data_dir = smoke_data(protocol, _made(out) / f"{protocol}-smoke-data")
    spec, baseline = scene_spec(protocol, data_dir, smoke=smoke)
    runs = plan_sweep(spec)
    return sweep_and_report(spec, _made(out), progress, baseline, by_arch=True, runs=runs)


def _made(out: Path) -> Path:
    Path(out).mkdir(parents=True, exist_ok=True)
    return Path(out)


def sweep_and_report(spec: dict, out: Path, progress: bool, baseline: str | None = None,
                     by_arch: bool = False, report: bool = True, runs: list | None = None) -> list[tuple[str, str]]:
    """Run a sweep, then write one report (`report`), or with `by_arch` one per architecture
    (`report-split`, `report-mtan`): [(where, Markdown)]. `runs`: the plan, if already checked."""
    from repeval.training import run as run_files
    from repeval.training.results import write_report
    from repeval.training.sweep import run_sweep
    from repeval.training.sweep_plan import plan_sweep

    runs = plan_sweep(spec, one_dataset=report or by_arch) if runs is None else runs
    folders = run_sweep(spec, out, progress=progress, runs=runs)
    root = out / spec["name"]
    log.info("%d runs in %s", len(folders), root)
    groups = {"report": folders} if report else {}
    if by_arch:
        archs = {f: run_files.read_config(f).arch for f in folders}
        groups = {f"report-{a}": [f for f in folders if archs[f] == a] for a in spec["grid"]["arch"]}
    written = []
    for name, paths in groups.items():
        where, table = write_report(paths, root / name, baseline=baseline)
        written.append((str(where), table))
    return written
