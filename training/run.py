"""The run folder: `config.json`, `metrics.jsonl`, `checkpoint.pt` (the contract) and
`train_state.pt` (optimiser, scheduler, method and RNG state for `--resume`).

Both checkpoint files are written atomically, checkpoint last, each tagged with its epoch; a
crash at any point leaves a consistent pair from the last finished epoch."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from repeval import __version__
from repeval.checkpoint import load_checkpoint, save_checkpoint
from repeval.errors import CheckpointError, DataNotFoundError, RepevalError
from repeval.storage import atomic_json, atomic_torch_save, atomic_write
from repeval.training.config import TrainConfig

CONFIG, METRICS, CHECKPOINT, TRAIN_STATE = "config.json", "metrics.jsonl", "checkpoint.pt", "train_state.pt"


def new_run_dir(config: TrainConfig) -> Path:
    """`<out_dir>/<dataset>-<method>[-dgr]-<time>/`, made unique if two runs start together."""
    stem = f"{config.dataset}-{config.method}{'-dgr' if config.dgr else ''}-{time.strftime('%Y%m%d-%H%M%S')}"
    root = Path(config.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(1000):
        path = root / (stem if i == 0 else f"{stem}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"cannot create a run folder under {root}")


def empty_run_dir(path: Path) -> Path:
    """A named run folder; it may exist but must be empty, so no finished run is overwritten."""
    path.mkdir(parents=True, exist_ok=True)
    if any(path.iterdir()):
        raise RepevalError(f"run folder {str(path)!r} is not empty; resume it or remove it")
    return path


def write_config(run_dir: Path, config: TrainConfig, dataset_report: dict) -> None:
    atomic_json(
        {"repeval_version": __version__, "config": config.to_dict(), "dataset_report": dataset_report},
        run_dir / CONFIG,
    )


def read_config(run_dir: Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise DataNotFoundError(f"{str(run_dir)!r} is not a run folder: {CONFIG} is missing")
    return TrainConfig.from_dict(json.loads(path.read_text())["config"])


def save_epoch(run_dir: Path, checkpoint: dict, train_state: dict, metrics_line: dict) -> None:
    atomic_torch_save(train_state, run_dir / TRAIN_STATE)
    save_checkpoint(checkpoint, run_dir / CHECKPOINT)
    lines = read_metrics(run_dir)
    lines = [m for m in lines if m["epoch"] < metrics_line["epoch"]] + [metrics_line]
    atomic_write(run_dir / METRICS, lambda f: f.write("".join(json.dumps(m) + "\n" for m in lines).encode()))


def latest_run(out_dir: str | Path, dataset: str, method: str = "ew", dgr: bool = False) -> Path | None:
    """The newest finished run folder `<out_dir>/<dataset>-<method>[-dgr]-<time>`, or None.

    >>> latest_run("runs", "multidigits", dgr=True)  # doctest: +SKIP
    PosixPath('runs/multidigits-ew-dgr-20261122-101500')
    """
    stem = f"{dataset}-{method}{'-dgr' if dgr else ''}-"
    runs = [p for p in Path(out_dir).glob(f"{stem}*") if (p / CHECKPOINT).is_file()
            and p.name[len(stem):len(stem) + 1].isdigit()]  # "-ew-2026..." must not match "-ew-dgr-..."
    return max(runs, key=lambda p: p.name) if runs else None


def read_metrics(run_dir: Path) -> list[dict]:
    """The `metrics.jsonl` lines of a run, one dict per finished epoch.

    >>> read_metrics("runs/demo/multidigits-ew-20261122-101500")[-1]["test_accuracy"]  # doctest: +SKIP
    {'left': 0.997, 'right': 0.9925, 'sum': 0.9855}
    """
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_resume_state(run_dir: Path) -> tuple[dict, dict]:
    """The last epoch's checkpoint and train state; they must belong to the same epoch."""
    ckpt = load_checkpoint(Path(run_dir) / CHECKPOINT)
    state_path = Path(run_dir) / TRAIN_STATE
    if not state_path.is_file():
        raise DataNotFoundError(f"cannot resume {str(run_dir)!r}: {TRAIN_STATE} is missing")
    state = torch.load(state_path, map_location="cpu", weights_only=True)
    if state.get("epoch") != ckpt["epoch"]:
        raise CheckpointError(
            f"cannot resume {str(run_dir)!r}: {TRAIN_STATE} is from epoch {state.get('epoch')} "
            f"but {CHECKPOINT} from epoch {ckpt['epoch']}"
        )
    return ckpt, state
