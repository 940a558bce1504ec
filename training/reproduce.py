"""`repeval reproduce utkface`: the paper's UTKFace protocol (Table 1 and Figure 2) as a sweep.

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

from pathlib import Path

from repeval.errors import InvalidChoiceError

TABLE1_METHODS = ["single", "ew", "dwa", "uw", "autol", "pcgrad", "cagrad", "imtl", "nash"]
FIGURE2_METHODS = ["sam", "pta"]
FIGURE2_BASES = ["ew", "autol", "cagrad", "nash"]
PAPER_DGR = {"penalty": "squared", "estimator": "finite-diff", "eps": 1e-4, "dummies": 3}
PROTOCOLS = ("utkface",)


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
