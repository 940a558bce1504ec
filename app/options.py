"""What the commands share: option types, option parsing, and turning a Ctrl-C into a message.
Torch-free, like `cli.py`: heavy modules load inside the functions that need them."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from repeval.datasets import DATASETS, NEEDS_DATA_DIR
from repeval.errors import InvalidChoiceError, TrainingInterrupted
from repeval.probes.config import READINGS, UniversalityConfig
from repeval.training.config import DEVICES, DGRConfig


@contextlib.contextmanager
def saying_where_training_stopped():
    """Ctrl-C in training: typer would turn it into a silent exit 130; say where the run stopped."""
    try:
        yield
    except TrainingInterrupted as e:
        print(f"stopped: {e}", file=sys.stderr)
        raise typer.Exit(130) from None


def one_of(names) -> str:
    return "one of: " + ", ".join(names)


# Options shared by the commands that measure encoders (probe, universality).
TimmName = Annotated[Optional[str], typer.Option("--timm", help="Measure a timm model instead of checkpoints.")]
TimmWeights = Annotated[Optional[Path], typer.Option("--pretrained-file", help="Local weights for --timm.")]
TimmDataset = Annotated[Optional[str], typer.Option("--dataset", help=f"Dataset for --timm, {one_of(DATASETS.names())}.")]
DataDirOverride = Annotated[Optional[Path], typer.Option("--data-dir", help="Override the data folder (the split stays the checkpoint's).")]
DataOptions = Annotated[list[str], typer.Option("--data-option", help="Dataset argument KEY=VALUE for --timm.")]
Device = Annotated[str, typer.Option("--device", help=one_of(DEVICES))]
# Universality's held-out reading (probes/universality.py), shared by `probe` and `universality`.
OptimalReading = Annotated[str, typer.Option(
    "--optimal", help=f"Reading of the optimal head, {one_of(READINGS)}. held-out (default): regularisation chosen "
    "by k-fold CV on the training split, refitted, scored on the test split (or by its CV loss); gap = "
    "mean_held-out L(sigma(y), random head) - mean_held-out L(y, optimal head): finite on separable embeddings. "
    "train-fit: Definition 2 as written, gap = mean_train L(sigma(y), random) - min_psi mean_train L(y, psi): "
    "0 optimum (flagged separable) when the classes separate.")]
CvFolds = Annotated[int, typer.Option("--cv", help="held-out: cross-validation folds.")]
L2Grid = Annotated[Optional[str], typer.Option("--l2-grid", help="held-out: comma-separated L2 penalties to choose from "
                                               "(default linear 1e0..1e-5, mlp 1e-1..1e-4, on standardised features).")]
MaxEpochs = Annotated[int, typer.Option("--max-epochs", help="held-out: epoch limit of MLP fits (early stopping).")]


def parse_key_values(items: list[str], option: str) -> dict:
    """`KEY=VALUE` pairs; values are read as JSON when they parse (numbers, true/false)."""
    args = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidChoiceError(f"{option} must look like KEY=VALUE; got {item!r}")
        try:
            args[key] = json.loads(value)
        except json.JSONDecodeError:
            args[key] = value
    return args


# Options that act only with a switch on, by parameter name, with their defaults (the configs').
DGR_DEFAULTS = {"dgr_lambda": None, "dgr_penalty": DGRConfig.penalty, "dgr_estimator": DGRConfig.estimator,
                "dgr_dummies": DGRConfig.dummies, "dgr_eps": DGRConfig.eps, "dgr_fd_scheme": DGRConfig.fd_scheme,
                "dgr_seed": DGRConfig.dummy_seed, "dgr_order": DGRConfig.order}
UNIVERSALITY_DEFAULTS = {"head": UniversalityConfig.head, "n_random": UniversalityConfig.n_random,
                         "optimal": UniversalityConfig.optimal, "standardize": False}


def check_switched_options(switch: str, on: bool, given: dict, defaults: dict) -> None:
    """Options that act only with `switch` on, changed from their `defaults` (`given`: parameter
    name -> value) while it is off, would do nothing: refuse them."""
    changed = [f"--{k.replace('_', '-')}" for k, v in given.items() if k in defaults and v != defaults[k]]
    if not on and changed:
        raise InvalidChoiceError(f"{', '.join(changed)} only act(s) with {switch}, which is off: add {switch}, or leave it out")


def check_data_dir(dataset: str, data_dir, embedded_ok: bool = False) -> None:
    """A dataset that reads a folder needs --data-dir; an embedded one takes none."""
    if dataset in NEEDS_DATA_DIR and data_dir is None:
        raise InvalidChoiceError(f"dataset {dataset!r} needs --data-dir (the folder that holds its files)")
    if dataset not in NEEDS_DATA_DIR and data_dir is not None and not embedded_ok:
        raise InvalidChoiceError(f"dataset {dataset!r} is embedded and reads no --data-dir")


def encoder_sources(checkpoints, timm_name, pretrained_file, dataset, data_dir, data_option) -> list:
    from repeval.probes.embeddings import source_from_checkpoint, source_from_timm

    if timm_name is not None:
        if checkpoints:
            raise InvalidChoiceError("give either checkpoints or --timm, not both")
        if dataset is None:
            raise InvalidChoiceError(f"--timm needs --dataset, {one_of(DATASETS.names())}")
        args = parse_key_values(data_option, "--data-option")
        if data_dir is not None:
            args["data_dir"] = str(data_dir)
        return [source_from_timm(timm_name, dataset, pretrained_file, args)]
    if not checkpoints:
        raise InvalidChoiceError("give at least one checkpoint (or --timm NAME --dataset NAME)")
    timm_only = [o for o, v in (("--pretrained-file", pretrained_file), ("--dataset", dataset), ("--data-option", data_option)) if v]
    if timm_only:
        raise InvalidChoiceError(f"{', '.join(timm_only)} set(s) what --timm measures; a checkpoint names its own "
                                 "weights and data (--data-dir moves its data folder)")
    paths = [p / "checkpoint.pt" if p.is_dir() else p for p in checkpoints]
    return [source_from_checkpoint(p, data_dir=None if data_dir is None else str(data_dir)) for p in paths]


def expand(patterns: list[str], option: str) -> list[Path]:
    """Paths, with quoted globs expanded here (`--a 'runs/grid/ew-seed*'`)."""
    import glob

    paths = []
    for pattern in patterns:
        found = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not found:
            raise InvalidChoiceError(f"{option} {pattern!r} matches no run folder")
        paths += [Path(p) for p in found]
    return paths


def make_console():
    from repeval.app.console import console

    return console()


def probe_dense_checkpoints(checkpoints, timm_name, out: Path, device: str, classifiers: Optional[str], universality: bool,
                            n_random: int, seed: int, head: str = "linear", optimal: str = "held-out", cv: int = 5,
                            per_image_options: tuple[str, ...] = ()) -> bool:
    """Dense checkpoints get the per-pixel linear probe (and universality) instead of the
    per-image suite, said in one line; returns whether they were handled here. Options of the
    per-image suite given explicitly (`per_image_options`) are refused: they would do nothing."""
    if timm_name is not None or not checkpoints:
        return False
    from repeval.probes.dense import PIXELS_PER_IMAGE, describe, is_dense_checkpoint, write_dense_probe
    from repeval.training.loop import resolve_device

    paths = [p / "checkpoint.pt" if p.is_dir() else p for p in checkpoints]
    dense = [p for p in paths if is_dense_checkpoint(p)]
    if not dense:
        return False
    if len(dense) != len(paths):
        raise InvalidChoiceError("these checkpoints mix dense and per-image tasks; probe each kind in its own command")
    if per_image_options:
        raise InvalidChoiceError(f"{', '.join(per_image_options)} set(s) the per-image probes, which dense checkpoints do not "
                                 "get (they get the per-pixel linear probe): leave it out")
    if universality and head != "linear":
        raise InvalidChoiceError(f"--head {head} does not apply to dense checkpoints: their universality uses per-pixel "
                                 "linear heads (--head linear)")
    from repeval.distributed import is_main_process

    if not is_main_process():  # under torchrun the per-pixel probe runs on rank 0 alone
        return True
    per_image = f"the per-image probes ({classifiers})" if classifiers else "per-image universality"
    typer.echo(f"dense tasks: {per_image} do not apply; running a per-pixel linear probe on {PIXELS_PER_IMAGE} "
               "sampled pixels per image instead (see repeval.probes.dense)")
    rows, urows = write_dense_probe(dense, out, universality=universality, n_random=n_random, seed=seed,
                                    device=str(resolve_device(device)), optimal=optimal, cv=cv)
    typer.echo(describe(rows))
    if urows:
        typer.echo(describe(urows))
    typer.echo(str(out))
    return True
