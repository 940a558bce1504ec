"""`repeval sweep CONFIG`: a grid of training runs (methods x +-DGR x lambda x seeds x any
training option), resumable.

A sweep file (TOML or JSON) has four tables:

    [train]              # TrainConfig fields shared by every run (dataset, epochs, backbone...)
    dataset = "multidigits"
    epochs = 2

    [grid]
    methods = ["single", "ew", "pcgrad", "sam"]
    dgr = [false, true]  # runs without and with DGR
    lambdas = [0.1, 0.3] # DGR strengths (default: the penalty's default lambda)
    seeds = [0, 1, 2]
    dgr_methods = ["ew", "pcgrad"]  # methods that get the DGR runs (default: all but single)
    arch = ["split", "mtan"]  # any `repeval train` option, by its name with underscores, is an axis:
    dgr_dummies = [1, 3, 5]   # lr, backbone, tasks (["seg", "seg,depth"]), dgr_* (DGR runs only)...

    [dgr]                # DGRConfig fields other than lam (penalty, estimator, eps, order...)
    penalty = "norm"

    [method_args.nash]   # options of one method
    update_every = 2
    [method_args.sam]    # a list is one more grid axis: SAM around each base method
    base = ["ew", "cagrad"]

`single` becomes one run per task, without DGR: the single-task baselines of Delta_MTL. Every
run has a fixed folder `<out>/<name>/<run>` named from its grid point, e.g.
`sam-base=cagrad+dgr-0.1-seed2`. Running the sweep again
skips finished runs, resumes runs killed after a finished epoch, and restarts runs killed
before one (the sweep folder keeps the plan, `sweep.json`, and the spec as a sweep file,
`spec.json`); a folder whose stored config differs from the plan is an error, never overwritten.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from repeval import __version__, datasets
from repeval.checkpoint import EXECUTION_FIELDS
from repeval.errors import FolderInUseError, InvalidChoiceError, RepevalError, check_number, check_seed
from repeval.storage import atomic_json, check_output_dir, folder_lock, remove_stale_temporaries
from repeval.training import run as run_files
from repeval.training.config import DGRConfig, TrainConfig
from repeval.training.loop import train
from repeval.validation import from_mapping

log = logging.getLogger("repeval")

SECTIONS = ("name", "train", "grid", "dgr", "method_args")
NAME = re.compile(r"[A-Za-z0-9_+=-][A-Za-z0-9._+=-]*")
PLAN, SPEC = "sweep.json", "spec.json"
MAX_RUNS = 10_000  # the paper's largest protocol is 129 runs


@dataclass(frozen=True)
class SweepRun:
    name: str
    config: TrainConfig


def read_sweep_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise RepevalError(f"sweep file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        spec = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as error:
        raise RepevalError(f"cannot read sweep file {str(path)!r}: {error}") from None
    spec.setdefault("name", path.stem)
    return spec


# `[grid]` keys that are not TrainConfig fields: the method axis and DGR's variants.
GRID_KEYS = ("methods", "dgr", "lambdas", "seeds", "dgr_methods")
# Options of DGR as `repeval train` names them (--dgr-dummies...) -> DGRConfig fields.
DGR_AXES = {"dgr_dummies": "dummies", "dgr_penalty": "penalty", "dgr_estimator": "estimator", "dgr_eps": "eps",
            "dgr_fd_scheme": "fd_scheme", "dgr_seed": "dummy_seed", "dgr_order": "order"}
# TrainConfig fields a grid axis may not set: the grid's own keys and sections set them, or
# they say where a run executes (the sweep decides).
NOT_AXES = ("method", "method_args", "dgr", "seed", "out_dir", "progress")


def train_axes() -> list[str]:
    """Every `[grid]` axis besides GRID_KEYS: TrainConfig fields and DGR's options."""
    from dataclasses import fields

    return [f.name for f in fields(TrainConfig) if f.name not in NOT_AXES] + list(DGR_AXES)


def _axis_value(key: str, value):
    # A task list may be written "seg,depth" as on the command line.
    return tuple(v.strip() for v in value.split(",")) if key == "tasks" and isinstance(value, str) else value


def _axis_label(key: str, value) -> str:
    text = "+".join(value) if isinstance(value, (list, tuple)) else format(value, "g") if isinstance(value, float) else str(value)
    return f"{key}={re.sub(r'[^A-Za-z0-9._+=-]', '_', text)}"


def split_grid(grid: dict) -> tuple[dict, dict]:
    """(the SweepGrid keys, the option axes {name: [values]}) of a `[grid]` table."""
    if not isinstance(grid, dict):
        raise InvalidChoiceError(f"[grid] must be a table; got {type(grid).__name__}")
    allowed = train_axes()
    own, axes = {}, {}
    for key, value in grid.items():
        if key in GRID_KEYS:
            own[key] = value
        elif key in allowed:
            if not isinstance(value, list) or not value:
                raise InvalidChoiceError(f"[grid] {key} must be a non-empty list of values, e.g. {key} = [...]; got {value!r}")
            axes[key] = [_axis_value(key, v) for v in value]
        else:
            raise InvalidChoiceError(
                f"unknown [grid] key(s) {[key]}; allowed: {', '.join(GRID_KEYS)}, or any training option: {', '.join(allowed)}"
            )
    return own, axes


@dataclass(frozen=True)
class SweepGrid:
    """The `[grid]` table's own keys: every run is one (method, DGR variant, seed) at one point
    of the option axes (`split_grid`)."""

    methods: tuple[str, ...] = ("ew",)
    dgr: tuple[bool, ...] = (False,)
    lambdas: tuple[float | None, ...] = (None,)
    seeds: tuple[int, ...] = (0,)
    dgr_methods: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        from repeval.training.methods import METHODS

        for key in ("methods", "dgr", "lambdas", "seeds"):
            if not getattr(self, key):
                raise InvalidChoiceError(f"[grid] {key} is empty; give at least one value")
        for method in self.methods:
            METHODS.get(method)
        for seed in self.seeds:
            check_seed("[grid]", "seeds", seed)
        for lam in self.lambdas:
            if lam is not None:
                check_number("[grid]", "lambdas", lam, low=0.0)
        unknown = set(self.dgr_methods or ()) - set(self.methods)
        if unknown:
            raise InvalidChoiceError(f"[grid] dgr_methods {sorted(unknown)} are not among the methods {list(self.methods)}")


def check_sweep_name(name: object) -> str:
    """A sweep's name is its folder's name: one path component, no traversal."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise InvalidChoiceError(
            f"sweep name {name!r} must be a folder name of letters, digits and . _ + = - "
            "(no '/', no '..', not starting with '.')"
        )
    return name


def expand(spec: dict) -> list[SweepRun]:
    """The runs of a sweep spec, in a stable order (method, DGR variant, seed)."""
    if not isinstance(spec, dict):
        raise InvalidChoiceError(f"a sweep file holds a table of sections; got {type(spec).__name__}")
    unknown = set(spec) - set(SECTIONS)
    if unknown:
        raise InvalidChoiceError(f"unknown sweep section(s) {sorted(unknown)}; allowed: {', '.join(SECTIONS)}")
    check_sweep_name(spec.get("name"))
    own, axes = split_grid(spec.get("grid", {}))
    grid = from_mapping(SweepGrid, own, "[grid]")
    train_args = spec.get("train", {})
    for key in ("method", "method_args", "dgr", "seed"):
        if isinstance(train_args, dict) and key in train_args:
            raise InvalidChoiceError(f"[train] must not set {key!r}: the [grid] and [{key}] sections do")
    for key in axes:
        if isinstance(train_args, dict) and key in train_args:
            raise InvalidChoiceError(f"{key!r} is set in [train] and is a [grid] axis; keep one")
    base = TrainConfig.from_dict(train_args, "[train]", strict=True)
    methods, dgr_flags, lambdas, seeds = list(grid.methods), grid.dgr, grid.lambdas, grid.seeds
    dgr_methods = [m for m in methods if m != "single"] if grid.dgr_methods is None else list(grid.dgr_methods)
    dgr_args = spec.get("dgr", {})
    if isinstance(dgr_args, dict) and "lam" in dgr_args:
        raise InvalidChoiceError("[dgr] must not set 'lam': [grid] lambdas does")
    for key in axes:
        if key in DGR_AXES and isinstance(dgr_args, dict) and DGR_AXES[key] in dgr_args:
            raise InvalidChoiceError(f"[dgr] sets {DGR_AXES[key]!r} and [grid] has the axis {key!r}; keep one")
    from_mapping(DGRConfig, dgr_args, "[dgr]")  # checked once, before any run
    method_args = spec.get("method_args", {})
    if not isinstance(method_args, dict) or not all(isinstance(v, dict) for v in method_args.values()):
        raise InvalidChoiceError("[method_args] must hold one table per method, e.g. [method_args.sam]")
    unknown = set(method_args) - set(methods)
    if unknown:
        raise InvalidChoiceError(f"[method_args] names {sorted(unknown)}, which are not among the methods {methods}")
    _check_dgr_applies(spec, grid, axes, dgr_methods)
    _check_grid_size(grid, axes, method_args)
    points = _points(base, axes, train_args)

    runs = []
    for method in methods:
        option_grid = dict(method_args.get(method, {}))
        if method == "single":  # one run per task; a --tasks axis does not apply to them
            option_grid["task"] = list(base.tasks or datasets.task_names(base.dataset))
        with_dgr = method in dgr_methods and True in dgr_flags
        variants = [
            *([None] if False in dgr_flags or not with_dgr else []),
            *([DGRConfig(lam=lam, **dgr_args) for lam in lambdas] if with_dgr else []),
        ]
        for options in _option_points(option_grid):
            for dgr in variants:
                # Runs without DGR do not vary with DGR's options, single-task runs not with --tasks.
                ignored = {*(DGR_AXES if dgr is None else ()), *(["tasks"] if method == "single" else [])}
                seen = set()
                for point, point_config in points:
                    setting = repr({k: v for k, v in point.items() if k not in ignored})
                    if setting in seen:
                        continue
                    seen.add(setting)
                    run_dgr = None if dgr is None else _dgr_at(dgr, point)
                    label = _label(point, axes, ignored)
                    if method == "single":
                        point_config = replace(point_config, tasks=base.tasks)
                    for seed in seeds:
                        config = replace(point_config, method=method, method_args=options, dgr=run_dgr, seed=seed)
                        runs.append(SweepRun(run_name(method, options, run_dgr, seed, label), config))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise InvalidChoiceError("the sweep grid repeats a run (duplicate methods, lambdas, seeds or axis values)")
    return runs


def _check_dgr_applies(spec: dict, grid: SweepGrid, axes: dict, dgr_methods: list[str]) -> None:
    """DGR's settings (the [dgr] table, lambdas, dgr_* axes) in a sweep that trains no DGR run
    would be silently ignored: refuse them."""
    if True in grid.dgr and any(m in dgr_methods for m in grid.methods):
        return
    given = [*(["[dgr]"] if spec.get("dgr") else []), *(["[grid] lambdas"] if "lambdas" in spec.get("grid", {}) else []),
             *(f"[grid] {k}" for k in axes if k in DGR_AXES)]
    if given:
        raise InvalidChoiceError(f"{', '.join(given)} set(s) DGR, but the sweep trains no DGR run ([grid] dgr = "
                                 f"{list(grid.dgr)}, dgr_methods = {dgr_methods}): add dgr = [false, true] or leave it out")


def _check_grid_size(grid: SweepGrid, axes: dict, method_args: dict) -> None:
    """Refuse a grid of more than MAX_RUNS runs before planning it point by point (an upper
    bound: every method x DGR variant x seed x axis point x method-option point)."""
    options = [math.prod(len(v) if isinstance(v, list) else 1 for v in method_args.get(m, {}).values()) for m in grid.methods]
    bound = (sum(options) * (len(grid.lambdas) + 1) * len(grid.seeds)
             * math.prod(len(v) for v in axes.values()))
    if bound > MAX_RUNS:
        raise InvalidChoiceError(f"the sweep grid has up to {bound:,} runs; a sweep holds at most {MAX_RUNS:,} "
                                 "(split it into several sweeps)")


def _points(base: TrainConfig, axes: dict, train_args: dict) -> list[tuple[dict, TrainConfig]]:
    """Every point of the option axes with the [train] config there. Each is validated here,
    before any run starts."""
    points = [{}]
    for key, values in axes.items():
        points = [{**p, key: v} for p in points for v in values]
    out = []
    for point in points:
        train_point = {k: v for k, v in point.items() if k not in DGR_AXES}
        config = TrainConfig.from_dict({**train_args, **train_point}, "[grid]", strict=True) if train_point else base
        from_mapping(DGRConfig, {DGR_AXES[k]: v for k, v in point.items() if k in DGR_AXES}, "[grid]")
        out.append((point, config))
    return out


def _label(point: dict, axes: dict, ignored: set[str]) -> str:
    """Run-name label of the axes with more than one value, but the `ignored` ones."""
    keys = [k for k in axes if len(axes[k]) > 1 and k not in ignored]
    return "-".join(_axis_label(k, point[k]) for k in keys)


def _dgr_at(dgr: DGRConfig, point: dict) -> DGRConfig:
    return replace(dgr, **{DGR_AXES[k]: v for k, v in point.items() if k in DGR_AXES})


def _option_points(option_grid: dict) -> list[dict]:
    """Every combination of the list-valued options (in the order given)."""
    points = [{}]
    for key, value in option_grid.items():
        values = value if isinstance(value, list) else [value]
        points = [{**point, key: v} for point in points for v in values]
    return points


def run_name(method: str, options: dict, dgr: DGRConfig | None, seed: int, label: str = "") -> str:
    """`<method>[-option=value...][+dgr-<lambda>][-<axis>=<value>...]-seed<n>`; `label` names the
    option axes that vary."""
    name = "-".join([method, *(f"{k}={v}" for k, v in options.items())])
    if dgr is not None:
        name += f"+dgr-{'default' if dgr.lam is None else format(dgr.lam, 'g')}"
    return f"{name}{'-' + label if label else ''}-seed{seed}"


def run_status(run_dir: Path, config: TrainConfig) -> str:
    """'new' (no config yet), 'partial' (resumable, maybe from its first epoch) or 'done';
    raises if the folder belongs to another config."""
    if not (run_dir / run_files.CONFIG).is_file():
        return "new"
    stored = run_files.read_config(run_dir)
    if _comparable(stored) != _comparable(config.resolved()):
        raise RepevalError(
            f"run folder {str(run_dir)!r} was made with a different config than the sweep now asks for; "
            "remove it or give the sweep another name"
        )
    return "done" if len(run_files.read_metrics(run_dir)) >= stored.epochs else "partial"


def _comparable(config: TrainConfig) -> dict:
    d = config.to_dict()
    for key in EXECUTION_FIELDS:
        d.pop(key)
    return d


def run_sweep(spec: dict, out_dir: str | Path = "runs/sweeps", progress: bool = False,
              runs: list[SweepRun] | None = None) -> list[Path]:
    """Run (or continue) every run of the sweep; returns the folders of its finished runs.
    `runs`: the plan if already checked (`plan_sweep`); else it is planned here, before any folder.

    Several processes can share one sweep: each run folder is locked while a process trains it,
    and the others pass over it to the next one."""
    if runs is None:
        from repeval.training.sweep_plan import plan_sweep  # here: that module imports this one

        runs = plan_sweep(spec, one_dataset=False)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InvalidChoiceError(
            "repeval sweep does not run under torchrun: start several `repeval sweep` workers on the grid instead "
            "(they share it through the run locks), or run each `repeval train` under torchrun"
        )
    check_output_dir(out_dir)
    root = Path(out_dir) / spec["name"]
    root.mkdir(parents=True, exist_ok=True)
    atomic_json(
        {"repeval_version": __version__, "spec": spec, "runs": {r.name: r.config.to_dict() for r in runs}},
        root / PLAN,
    )
    atomic_json(spec, root / SPEC)  # a sweep file: `repeval sweep <root>/spec.json` continues the sweep
    folders, busy = [], []
    for i, sweep_run in enumerate(runs, 1):
        run_dir = root / sweep_run.name
        config = replace(sweep_run.config, out_dir=str(root), progress=progress)
        run_dir.mkdir(exist_ok=True)
        try:
            with folder_lock(run_dir, "run folder"):
                status = run_status(run_dir, config)
                log.info("[%d/%d] %s: %s", i, len(runs), sweep_run.name,
                         {"done": "finished, skipped", "partial": "resuming", "new": "training"}[status])
                if status == "partial":  # also a run killed before its first epoch: it restarts
                    train(config, resume_dir=run_dir)
                elif status == "new":
                    remove_stale_temporaries(run_dir)  # a config write killed half-way
                    train(config, run_dir=run_dir)  # any other non-empty folder is refused, never deleted
                else:
                    run_files.recover(run_dir)  # a kill between the last commit and its renames
        except FolderInUseError as error:
            log.info("[%d/%d] %s: %s; passed over", i, len(runs), sweep_run.name, error)
            busy.append(run_dir)
            continue
        folders.append(run_dir)
    if busy:
        log.info("%d run(s) of %s are being trained by other processes; run the sweep again later to "
                 "report them", len(busy), root)
    return folders
