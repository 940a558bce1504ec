"""The run folder: `config.json`, `metrics.jsonl`, `checkpoint.pt` (the contract),
`train_state.pt` (optimiser, scheduler, method and RNG state for `--resume`), `commit.json`
(the last committed epoch) and `.lock` (the owner while a process trains it).

An epoch is committed as a whole:
1. its three files are staged as `.<name>.e<epoch>.next`, each written and fsynced;
2. `commit.json` is replaced atomically by `{"epoch": e, "sizes": ...}`: the commit point;
3. the staged files are renamed into place and the folder is fsynced.
A kill before 2 leaves epoch e-1 committed and the staged files are discarded on resume; a kill
after 2 leaves epoch e committed and resume finishes the renames (`recover`). Every file a
reader sees under its own name is complete, from epoch e-1 or e.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

from repeval import __version__
from repeval.errors import CheckpointError, DataNotFoundError, NonFiniteLossError, RepevalError
from repeval.storage import (
    LOCK_NAME, TMP_SUFFIX, atomic_json, fsync_dir, publish, remove_stale_temporaries, write_synced,
)
from repeval.training.config import TrainConfig

log = logging.getLogger("repeval")

CONFIG, METRICS, CHECKPOINT, TRAIN_STATE = "config.json", "metrics.jsonl", "checkpoint.pt", "train_state.pt"
COMMIT = "commit.json"
EPOCH_FILES = (TRAIN_STATE, CHECKPOINT, METRICS)


def staged_name(name: str, epoch: int) -> str:
    return f".{name}.e{epoch}.next"


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
    if any(p.name != LOCK_NAME for p in path.iterdir()):
        raise RepevalError(f"run folder {str(path)!r} is not empty; resume it or remove it")
    return path


def write_config(run_dir: Path, config: TrainConfig, dataset_report: dict, world_size: int = 1,
                 execution: dict | None = None) -> None:
    """`world_size`: the processes that train the run together (torchrun); `execution`: how its
    "auto" options resolved on the machine that started it (device, precision, memory format, workers)."""
    atomic_json(
        {"repeval_version": __version__, "config": config.to_dict(), "dataset_report": dataset_report,
         "world_size": world_size, **({"execution": execution} if execution else {})},
        run_dir / CONFIG,
    )


def stored_world_size(run_dir: Path) -> int:
    """The world size a run was trained with (1 for runs from before torchrun support)."""
    return int(json.loads((Path(run_dir) / CONFIG).read_text()).get("world_size", 1))


def read_config(run_dir: Path) -> TrainConfig:
    """The run's stored config; a missing, unreadable or malformed `config.json` is a one-line error.
    Options added after the run was made take their defaults (`TrainConfig.resolved`), so a run
    of an earlier version compares equal to the same run planned now."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        raise DataNotFoundError(f"{str(run_dir)!r} is not a run folder: {CONFIG} is missing")
    try:
        stored = json.loads(path.read_text())
        config = TrainConfig.from_dict(stored["config"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{str(path)!r} is not a valid run config ({type(e).__name__}: {first})") from None
    return config.resolved()


def rewrite_config(run_dir: Path, config: TrainConfig) -> None:
    """Store a changed config (a resumed run extended to more epochs), keeping the dataset report."""
    stored = json.loads((Path(run_dir) / CONFIG).read_text())
    write_config(run_dir, config, stored.get("dataset_report", {}), stored.get("world_size", 1), stored.get("execution"))


def committed_epoch(run_dir: Path) -> int | None:
    """The last committed epoch, or None if no epoch finished.

    Runs made before commit records existed count their consistent checkpoint/train-state pair."""
    run_dir = Path(run_dir)
    try:
        return int(json.loads((run_dir / COMMIT).read_text())["epoch"])
    except FileNotFoundError:
        pass
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{str(run_dir / COMMIT)!r} is corrupt ({e}); the run cannot be trusted") from None
    if (run_dir / CHECKPOINT).is_file() and (run_dir / TRAIN_STATE).is_file():
        return _legacy_epoch(run_dir)
    return None


def _legacy_epoch(run_dir: Path) -> int:
    import torch

    from repeval.checkpoint import load_checkpoint

    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    state = read_train_state(run_dir / TRAIN_STATE)
    if state.get("epoch") != ckpt["epoch"]:
        raise CheckpointError(
            f"cannot resume {str(run_dir)!r}: {TRAIN_STATE} is from epoch {state.get('epoch')} "
            f"but {CHECKPOINT} from epoch {ckpt['epoch']}"
        )
    return int(ckpt["epoch"])


# What a train state holds (`training.loop.save_epoch`), and what each part must be.
TRAIN_STATE_PARTS = {"epoch": int, "optimizer": dict, "scheduler": dict, "method": dict, "rng": "Tensor"}


def read_train_state(path: Path) -> dict:
    """A run's `train_state.pt` (weights_only: nothing is unpickled), refused in one line when it
    is unreadable or lacks a part."""
    import torch

    from repeval.checkpoint import load_tensors

    state = load_tensors(path, "is not a train state the run can resume from")
    if not isinstance(state, dict):
        raise CheckpointError(f"{str(path)!r} is not a train state (a {type(state).__name__}); the run cannot resume from it")
    for key, kind in TRAIN_STATE_PARTS.items():
        ok = isinstance(state.get(key), torch.Tensor) if kind == "Tensor" else isinstance(state.get(key), kind)
        if not ok:
            raise CheckpointError(f"{str(path)!r} is damaged: its {key!r} is "
                                  f"{'missing' if key not in state else type(state[key]).__name__}; the run cannot resume from it")
    return state


def check_finite(checkpoint: dict, epoch: int, step: int) -> None:
    """Refuse to write weights that are not all finite: the last good epoch must stay the resumable one."""
    from repeval.checkpoint import non_finite_weight

    bad = non_finite_weight(checkpoint)
    if bad is not None:
        raise NonFiniteLossError(f"non-finite weights at epoch {epoch + 1}, after step {step} ({bad}): "
                                 "training stopped and this epoch was not saved")


def save_epoch(run_dir: Path, checkpoint: dict, train_state: dict, metrics_line: dict) -> None:
    """Commit one epoch: stage its files, write the commit record, publish (module docstring)."""
    import torch

    run_dir = Path(run_dir)
    epoch = metrics_line["epoch"]
    check_finite(checkpoint, epoch, train_state.get("step", -1))
    lines = [m for m in read_metrics(run_dir) if m["epoch"] < epoch] + [metrics_line]
    writers = {
        TRAIN_STATE: lambda f: torch.save(train_state, f),
        CHECKPOINT: lambda f: torch.save(checkpoint, f),
        METRICS: lambda f: f.write("".join(json.dumps(m) + "\n" for m in lines).encode()),
    }
    sizes = {}
    for name in EPOCH_FILES:
        staged = write_synced(run_dir / staged_name(name, epoch), writers[name])
        sizes[name] = staged.stat().st_size
    fsync_dir(run_dir)
    atomic_json({"epoch": epoch, "sizes": sizes, "repeval_version": __version__}, run_dir / COMMIT)
    _publish_staged(run_dir, epoch, sizes)


def _publish_staged(run_dir: Path, epoch: int, sizes: dict) -> None:
    moved = False
    for name in EPOCH_FILES:
        staged = run_dir / staged_name(name, epoch)
        if staged.is_file():
            if staged.stat().st_size != sizes.get(name):
                raise CheckpointError(
                    f"{str(staged)!r} does not have the size that {COMMIT} recorded; the run folder is damaged"
                )
            publish(staged, run_dir / name)
            moved = True
    if moved:
        fsync_dir(run_dir)


def recover(run_dir: Path) -> int | None:
    """Bring a run folder killed at any instant back to its last committed epoch: finish a
    commit's renames, drop uncommitted staged files and orphan temporaries. Call under the
    run's lock. Returns the committed epoch (None: no epoch finished)."""
    run_dir = Path(run_dir)
    epoch = committed_epoch(run_dir)
    if epoch is not None and (run_dir / COMMIT).is_file():
        sizes = json.loads((run_dir / COMMIT).read_text()).get("sizes", {})
        _publish_staged(run_dir, epoch, sizes)
    leftovers = [p for p in run_dir.glob(".*.next")]
    for path in leftovers:
        path.unlink()
    removed = remove_stale_temporaries(run_dir) + [p.name for p in leftovers]
    if removed:
        log.info("%s: removed %d leftover file(s) of an interrupted save: %s", run_dir, len(removed),
                 ", ".join(sorted(removed)))
    return epoch


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
    """The `metrics.jsonl` lines of a run, one dict per committed epoch. Read-only: a commit
    whose renames a kill interrupted is read from its staged file.

    >>> read_metrics("runs/demo/multidigits-ew-20261122-101500")[-1]["test_accuracy"]  # doctest: +SKIP
    {'left': 0.997, 'right': 0.9925, 'sum': 0.9855}
    """
    run_dir = Path(run_dir)
    path = run_dir / METRICS
    try:
        epoch = json.loads((run_dir / COMMIT).read_text())["epoch"]
        if (run_dir / staged_name(METRICS, epoch)).is_file():
            path = run_dir / staged_name(METRICS, epoch)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if not path.is_file():
        return []
    try:
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except ValueError as e:
        raise CheckpointError(f"{str(path)!r} is corrupt ({e})") from None
    return [with_test_metrics(line) for line in lines]


def with_test_metrics(line: dict) -> dict:
    """A metrics line with `test` ({task: {metric: value}}); lines written before task kinds
    existed hold only `test_accuracy` ({task: accuracy}) and gain the equivalent `test`.

    >>> with_test_metrics({"test_accuracy": {"age": 0.5}})["test"]
    {'age': {'accuracy': 0.5}}
    """
    if "test" not in line and isinstance(line.get("test_accuracy"), dict):
        return {**line, "test": {t: {"accuracy": a} for t, a in line["test_accuracy"].items()}}
    return line


def load_resume_state(run_dir: Path) -> tuple[dict, dict]:
    """The committed epoch's checkpoint and train state (after `recover`); both must be that epoch's."""
    import torch

    from repeval.checkpoint import load_checkpoint

    run_dir = Path(run_dir)
    epoch = committed_epoch(run_dir)
    ckpt = load_checkpoint(run_dir / CHECKPOINT)
    state_path = run_dir / TRAIN_STATE
    if not state_path.is_file():
        raise DataNotFoundError(f"cannot resume {str(run_dir)!r}: {TRAIN_STATE} is missing")
    state = read_train_state(state_path)
    if not (state.get("epoch") == ckpt["epoch"] == epoch):
        raise CheckpointError(
            f"cannot resume {str(run_dir)!r}: {COMMIT} says epoch {epoch}, {TRAIN_STATE} is from epoch "
            f"{state.get('epoch')} and {CHECKPOINT} from epoch {ckpt['epoch']}"
        )
    return ckpt, state


__all__ = [
    "CONFIG", "METRICS", "CHECKPOINT", "TRAIN_STATE", "COMMIT", "TMP_SUFFIX", "new_run_dir", "empty_run_dir",
    "write_config", "read_config", "rewrite_config", "committed_epoch", "save_epoch", "recover", "latest_run",
    "read_metrics", "with_test_metrics", "load_resume_state", "check_finite",
]
