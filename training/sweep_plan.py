"""A sweep's plan, checked whole before any folder is made (`repeval sweep`, `repeval reproduce`),
and `repeval sweep --dry-run`'s description of it. The grid itself is `repeval.training.sweep`."""

from __future__ import annotations

import json
from pathlib import Path

from repeval.errors import InvalidChoiceError
from repeval.training import run as run_files
from repeval.training.config import check_options_apply
from repeval.training.loop import build_training
from repeval.training.sweep import SweepRun, expand, run_status


# Runs equal in these fields build the same data, model and batch: the plan builds one of each.
BUILD_FIELDS = ("dataset", "data_dir", "dataset_args", "tasks", "arch", "arch_args", "backbone", "pretrained_file",
                "hidden", "aspp_width", "aspp_rates", "batch_size", "device")


def plan_sweep(spec: dict, one_dataset: bool = True) -> list[SweepRun]:
    """The sweep's runs, with everything they need checked before any folder is made: every
    point's config, the options each run would ignore, and one build (data folder, weights file,
    model, batch memory) of each distinct data-and-model setting. `one_dataset`: the sweep's
    report covers one dataset, so its runs must share it."""
    runs = expand(spec)
    used = sorted({r.config.dataset for r in runs})
    if one_dataset and len(used) > 1:
        raise InvalidChoiceError(f"the sweep's runs use {len(used)} datasets ({', '.join(used)}) and its report covers one: "
                                 "make one sweep per dataset, or pass --no-report")
    built = set()
    for sweep_run in runs:
        check_options_apply(sweep_run.config)
        key = json.dumps({f: getattr(sweep_run.config, f) for f in BUILD_FIELDS}, sort_keys=True, default=str)
        if key not in built:
            built.add(key)
            build_training(sweep_run.config.resolved())
    return runs


def describe_plan(runs: list[SweepRun], root: Path) -> str:
    """`repeval sweep --dry-run`: each run with its status, and the plan's size in epochs."""
    lines, epochs, todo = [], 0, 0
    for sweep_run in runs:
        config = sweep_run.config.resolved()
        status = run_status(root / sweep_run.name, config) if (root / sweep_run.name).is_dir() else "new"
        trained = 0 if status == "new" else len(run_files.read_metrics(root / sweep_run.name))
        epochs += config.epochs
        todo += max(config.epochs - trained, 0)
        lines.append(f"{sweep_run.name}  ({config.dataset}, {config.epochs} epochs, {status})")
    lines.append(f"{len(runs)} runs, {epochs} epochs in all, {todo} still to train; nothing was created")
    return "\n".join(lines)
