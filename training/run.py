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
from repeval.errors import CheckpointError, DataNotFoundError
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


def read_metrics(run_dir: Path) -> list[dict]:
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
