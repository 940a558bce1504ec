"""The checkpoint contract between training and probing.

A checkpoint is a dict of tensors and plain Python types, loadable with
`torch.load(path, weights_only=True)`:

    format, format_version (2), package_version
    model:    arch, arch_args (absent before MTAN: "split"), backbone, in_chans, input_size,
              num_features, hidden, heads (HeadConfig: hidden, width, rates), dense (feature-map
              encoder), map_side, dummies, dummy_seed, pretrained_file
    encoder:  encoder state dict
    heads:    {task: head state dict};  dummy_heads: {task: stacked head parameters} (may be empty)
    tasks:    [{name, num_classes, label_names, ordinal, kind, options}]
    dataset:  {name, args}  (args rebuild the exact split, split seed included)
    input:    {channels, height, width, mean, std}
    train_config, metrics, epoch
    execution: {device, precision, channels_last, num_workers} as resolved where it trained

Whatever probing needs to rebuild an encoder lives here, nothing else. Format 1 (before task
kinds: classification only, pooled encoder, dummies stored as w1, b1, w2, b2) still loads.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import torch

from repeval import __version__
from repeval.datasets.base import InputSpec
from repeval.errors import CheckpointError, DataNotFoundError, RepevalError
from repeval.heads import HeadConfig
from repeval.archs import build_arch_encoder
from repeval.models import V1_DUMMY_KEYS, MultiTaskModel
from repeval.storage import atomic_torch_save, file_sha256
from repeval.tasks import TaskSpec

FORMAT = "repeval.checkpoint"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
# `train_config` fields that change neither the trained model nor its metrics (where and how a
# run was executed): two runs whose configs differ only here are the same experiment.
EXECUTION_FIELDS = ("out_dir", "progress", "num_workers", "log_every", "device", "channels_last", "data_on_device",
                    "tensorboard")


def make_checkpoint(
    model: MultiTaskModel,
    *,
    model_config: dict,
    dataset: dict,
    input_spec: InputSpec,
    train_config: dict,
    metrics: dict,
    epoch: int,
    execution: dict | None = None,
) -> dict:
    def cpu(sd: dict) -> dict:
        return {k: v.detach().cpu().clone() for k, v in sd.items()}

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "model": dict(model_config),
        "encoder": cpu(model.encoder.state_dict()),
        "heads": {name: cpu(head.state_dict()) for name, head in model.heads.items()},
        "dummy_heads": {name: cpu(d.state_dict()) for name, d in model.dummy_heads.items()},
        "tasks": [t.to_dict() for t in model.tasks],
        "dataset": dataset,
        "input": input_spec.to_dict(),
        "train_config": train_config,
        "metrics": metrics,
        "epoch": epoch,
        "execution": dict(execution or {}),
    }


def save_checkpoint(checkpoint: dict, path: str | os.PathLike) -> Path:
    """Write atomically: a crash leaves the previous checkpoint intact."""
    return atomic_torch_save(checkpoint, path)


def load_tensors(path: Path, refusal: str) -> object:
    """`torch.load(weights_only=True)`: tensors and plain values only, nothing is unpickled. A
    file that holds anything else, or is truncated, raises a `CheckpointError`:
    "<path> <refusal> (<why>)"."""
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        why = "it holds objects other than tensors and plain values, which repeval never unpickles"
    except (RuntimeError, EOFError, ValueError, OSError) as e:
        why = f"cannot be read: {str(e).strip().split('. ')[0][:200] if str(e).strip() else type(e).__name__}"
    raise CheckpointError(f"{str(path)!r} {refusal} ({why})")


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Load and validate a repeval checkpoint (weights_only: no code runs on load).

    >>> ckpt = load_checkpoint("runs/demo/multidigits-ew-dgr-20261122-101500/checkpoint.pt")  # doctest: +SKIP
    >>> ckpt["model"]["backbone"], [t["name"] for t in ckpt["tasks"]]  # doctest: +SKIP
    ('test_resnet', ['left', 'right', 'sum'])
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataNotFoundError(f"checkpoint {str(path)!r} does not exist")
    ckpt = load_tensors(path, "is not a repeval checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not a repeval checkpoint (no {FORMAT!r} format marker)")
    version = ckpt.get("format_version")
    if version not in READABLE_VERSIONS:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint format version {version!r}; this repeval "
            f"({__version__}) reads versions {', '.join(map(str, READABLE_VERSIONS))}"
        )
    ckpt = upgrade(_checked_parts(ckpt, path))
    check_weights_finite(ckpt, path)
    return ckpt


# The parts every checkpoint has, and what each must be; `model` must name these keys.
REQUIRED_PARTS = {"model": dict, "encoder": dict, "heads": dict, "dummy_heads": dict, "tasks": list, "dataset": dict,
                  "input": dict}
REQUIRED_MODEL_KEYS = ("backbone", "in_chans", "hidden", "dummies", "dummy_seed")


def _checked_parts(ckpt: dict, path: Path) -> dict:
    """Refuse a checkpoint missing a part, or whose parts are not what the format says."""
    def refuse(problem: str) -> CheckpointError:
        return CheckpointError(f"{str(path)!r} is a damaged repeval checkpoint: {problem}")

    for key, kind in REQUIRED_PARTS.items():
        if not isinstance(ckpt.get(key), kind):
            raise refuse(f"{key!r} is {'missing' if key not in ckpt else type(ckpt[key]).__name__}, expected a {kind.__name__}")
    missing = [k for k in REQUIRED_MODEL_KEYS if k not in ckpt["model"]]
    if missing:
        raise refuse(f"its model record lacks {', '.join(missing)}")
    try:
        tasks = [TaskSpec.from_dict(t) for t in ckpt["tasks"]]
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise refuse(f"its task list cannot be read ({type(e).__name__}: {e})") from None
    names = [t.name for t in tasks]
    if not names or sorted(ckpt["heads"]) != sorted(names):
        raise refuse(f"it has heads for {sorted(ckpt['heads'])} but tasks {names}")
    if not isinstance(ckpt["dataset"].get("name"), str) or not isinstance(ckpt["dataset"].get("args"), dict):
        raise refuse("its dataset record lacks a name or args")
    state_dicts = [("encoder", ckpt["encoder"])] + [(f"{group} {task}", sd) for group in ("heads", "dummy_heads")
                                                   for task, sd in ckpt[group].items()]
    for where, sd in state_dicts:
        if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            raise refuse(f"its {where} weights are not a dict of tensors")
    return ckpt


def non_finite_weight(ckpt: dict) -> str | None:
    """The first weight of a checkpoint with a NaN or infinite value ("heads left.0.weight"), or None."""
    for group in ("encoder", "heads", "dummy_heads"):
        items = ckpt[group].items() if group == "encoder" else (
            (f"{task}.{k}", v) for task, sd in ckpt[group].items() for k, v in sd.items())
        for key, value in items:
            if value.is_floating_point() and not bool(value.isfinite().all()):
                return f"{group} {key}"
    return None


def check_weights_finite(ckpt: dict, path: str | os.PathLike) -> None:
    """Refuse weights with NaN or infinite values: every measure of them would be meaningless."""
    bad = non_finite_weight(ckpt)
    if bad is not None:
        raise CheckpointError(f"{str(path)!r} holds non-finite weights ({bad}); it cannot be measured or resumed")


def upgrade(ckpt: dict) -> dict:
    """A format-1 checkpoint in format 2's terms (its tasks are classification, its encoder
    pooled, its dummies two-layer heads stored as w1, b1, w2, b2)."""
    if ckpt.get("format_version") != 1:
        return ckpt
    model = dict(ckpt["model"])
    model.setdefault("heads", HeadConfig(hidden=int(model["hidden"])).to_dict())
    model.setdefault("dense", False)
    model.setdefault("map_side", None)
    dummies = {task: {V1_DUMMY_KEYS.get(k, k): v for k, v in sd.items()} for task, sd in ckpt["dummy_heads"].items()}
    return {**ckpt, "model": model, "dummy_heads": dummies, "tasks": [TaskSpec.from_dict(t).to_dict() for t in ckpt["tasks"]]}


def model_from_checkpoint(ckpt: dict, where: str | os.PathLike = "the checkpoint") -> MultiTaskModel:
    """Rebuild the model a checkpoint describes, with its weights (no pretrained file needed);
    weights that do not fit the stored config (missing keys, wrong shapes) raise a
    `CheckpointError` naming `where`."""
    try:
        return _model_from_checkpoint(ckpt)
    except RepevalError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:2]) if first else type(e).__name__
        raise CheckpointError(f"{str(where)!r}: its weights do not fit the model its config describes ({detail[:300]})") from None


def _model_from_checkpoint(ckpt: dict) -> MultiTaskModel:
    cfg = ckpt["model"]
    tasks = tuple(TaskSpec.from_dict(t) for t in ckpt["tasks"])
    model = MultiTaskModel(
        build_arch_encoder(cfg.get("arch", "split"), cfg["backbone"], num_tasks=len(tasks), in_chans=cfg["in_chans"],
                           dense=bool(cfg.get("dense", False)), input_size=_input_size(ckpt), options=cfg.get("arch_args", {})),
        tasks,
        dummies=cfg["dummies"],
        dummy_seed=cfg["dummy_seed"],
        head_config=HeadConfig.from_dict(cfg.get("heads", {"hidden": cfg["hidden"]})),
        map_side=cfg.get("map_side"),
    )
    model.encoder.load_state_dict(ckpt["encoder"])
    for name, sd in ckpt["heads"].items():
        model.heads[name].load_state_dict(sd)
    for name, sd in ckpt["dummy_heads"].items():
        model.dummy_heads[name].load_state_dict(sd)
    return model


def _input_size(ckpt: dict) -> tuple[int, int] | None:
    size = ckpt["model"].get("input_size")
    if size is None and "input" in ckpt:
        size = (ckpt["input"]["height"], ckpt["input"]["width"])
    return None if size is None else (int(size[0]), int(size[1]))


def content_hash(path: str | os.PathLike) -> str:
    """SHA-256 of the file's bytes: the key under which derived results are cached."""
    return file_sha256(path)
