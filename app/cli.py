"""The `repeval` commands: options become typed configs here, at the boundary (`entry.py` runs
them and turns user errors into one line)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

# Only torch-free modules at import time: `repeval --help` and option errors answer at once.
# Each command imports what it runs (torch, timm, scikit-learn, matplotlib) inside its body.
from repeval import __version__
from repeval.app.console import progress_default
from repeval.app.catalog import help_epilog, list_entries
from repeval.app.data_commands import check_data
from repeval.app.entry import console, main  # noqa: F401 - the entry points; scripts and tests import them from here
from repeval.archs import list_archs
from repeval.app.options import (
    CvFolds, DataDirOverride, DataOptions, Device, L2Grid, MaxEpochs, OptimalReading, TimmDataset, TimmName, TimmWeights,
    DGR_DEFAULTS, UNIVERSALITY_DEFAULTS, check_data_dir, check_switched_options, expand, make_console, one_of,
    parse_key_values, probe_dense_checkpoints, saying_where_training_stopped, encoder_sources,
)
from repeval.datasets import DATASETS
from repeval.errors import check_choice, check_number, check_seed
from repeval.metrics import DELTA_VARIANTS, PUBLISHED_BASES
from repeval.probes.config import HEADS as UNIVERSALITY_HEADS
from repeval.probes.config import EXTRACT_BATCH, MAP_MAX_POINTS, MAP_METHODS, ProbeConfig, UniversalityConfig
from repeval.probes.registry import PROBES, parse_classifiers
from repeval.storage import check_output_dir
from repeval.training.config import DEVICES, PRECISIONS, ESTIMATORS, FD_SCHEMES, OPTIMIZERS, ORDERS, PENALTIES, SCHEDULES, DGRConfig, TrainConfig
from repeval.training.methods import METHODS, rep_grad_methods
from repeval.training.reproduce import PROTOCOLS
from repeval.validation import parse_float_list, parse_seeds, parse_workers

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Train multi-task encoders with and without DGR, and measure their shared representations.",
)


# Option defaults are the configs' own (a default lives in one place).
_T, _D, _P, _U = TrainConfig, DGRConfig, ProbeConfig, UniversalityConfig


@app.command(epilog=help_epilog("methods", "datasets", "archs"))
def train(
    dataset: str = typer.Argument("multidigits", help=f"Dataset, {one_of(DATASETS.names())}."),
    data_dir: Optional[Path] = typer.Option(None, help="Dataset folder (utkface: the unpacked UTKFace/ folder; nyuv2, cityscapes: the preprocessed {train,val}/ layout)."),
    data_option: list[str] = typer.Option([], help="Dataset argument KEY=VALUE, repeatable (e.g. n_train=2000)."),
    split_seed: int = typer.Option(0, help="Seed of the train/test split (kept apart from --seed)."),
    tasks: Optional[str] = typer.Option(None, help="Comma list: train on these of the dataset's tasks only (default: all)."),
    arch: str = typer.Option(_T.arch, help=f"Multi-task architecture, {one_of(list_archs())} (docs/dense.md, Architectures)."),
    arch_option: list[str] = typer.Option([], help="Architecture option KEY=VALUE, repeatable (mtan: shared=blocks|backbone)."),
    backbone: Optional[str] = typer.Option(None, help="Any timm model name; default per dataset."),
    pretrained_file: Optional[Path] = typer.Option(None, help="Local weights file for the backbone."),
    hidden: int = typer.Option(_T.hidden, help="Hidden width of each two-layer task head."),
    head_relu: bool = typer.Option(False, "--head-relu", help="A ReLU on classification heads' logits, task and dummy (the authors' UTKFace heads; reproduce utkface uses it)."),
    aspp_width: Optional[int] = typer.Option(None, help="Channels of dense tasks' DeepLabv3 heads; default per dataset (256: the reference)."),
    aspp_rates: str = typer.Option(_T.aspp_rates, help="ASPP dilation rates, e.g. 12,24,36; auto: the reference's on maps of 32+ rows, scaled down on smaller ones."),
    method: str = typer.Option(_T.method, help=f"Multi-task method, {one_of(METHODS.names())}."),
    method_option: list[str] = typer.Option([], help="Method option KEY=VALUE, repeatable (e.g. rho=0.1 for sam)."),
    task: Optional[str] = typer.Option(None, help="The task a --method single run trains."),
    rep_grad: bool = typer.Option(False, "--rep-grad", help=f"Task gradients at the shared representation ({', '.join(rep_grad_methods())})."),
    dgr: bool = typer.Option(False, "--dgr/--no-dgr", help="Add Dummy Gradient norm Regularization."),
    dgr_lambda: Optional[float] = typer.Option(None, help="DGR strength; default per penalty (docs/dgr.md, Choosing λ)."),
    dgr_penalty: str = typer.Option(_D.penalty, help=f"{one_of(PENALTIES)} (norm: paper eq. 5; squared: authors' code)."),
    dgr_estimator: str = typer.Option(_D.estimator, help=f"{one_of(ESTIMATORS)} (exact: double backward; finite-diff: +-eps)."),
    dgr_dummies: int = typer.Option(_D.dummies, help="Dummy heads per task."),
    dgr_eps: float = typer.Option(_D.eps, help="Finite-difference step (parameter-space norm)."),
    dgr_fd_scheme: str = typer.Option(_D.fd_scheme, help=f"{one_of(FD_SCHEMES)}: finite differences central (O(eps^2)) or one-sided as the authors' code (one dummy forward cheaper)."),
    dgr_seed: int = typer.Option(_D.dummy_seed, help="Seed of the dummy heads."),
    dgr_order: str = typer.Option(_D.order, help=f"{one_of(ORDERS)}: DGR's gradient added after the method combines task gradients (authors' code), or inside each task's loss."),
    lr: Optional[float] = typer.Option(None, help="Learning rate; default per dataset."),
    optimizer: Optional[str] = typer.Option(None, help=f"{one_of(OPTIMIZERS)}; default per dataset (sgd: momentum 0.9)."),
    schedule: Optional[str] = typer.Option(None, help=f"{one_of(SCHEDULES)}; default per dataset."),
    weight_decay: Optional[float] = typer.Option(None, help="Default per dataset."),
    epochs: Optional[int] = typer.Option(None, help="Default per dataset."),
    batch_size: Optional[int] = typer.Option(None, help="Default per dataset."),
    lr_step: Optional[int] = typer.Option(None, help="StepLR period in epochs (0: never); default a third of the epochs."),
    lr_gamma: float = typer.Option(_T.lr_gamma),
    seed: int = typer.Option(_T.seed, help="Training seed (initialisation, shuffling)."),
    device: str = typer.Option(_T.device, help=one_of(DEVICES)),
    precision: str = typer.Option(_T.precision, help=f"{one_of(PRECISIONS)}; auto: bf16 autocast on CUDA devices that support it, fp32 elsewhere (bf16 runs on CPU too)."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="Channels-last memory format; default: on CUDA only."),
    num_workers: str = typer.Option("auto", help="DataLoader worker processes; auto: min(8, cores) on CUDA, 0 on CPU (the cores compute)."),
    data_on_device: bool = typer.Option(False, "--data-on-device", help="Hold the dataset on the device and augment there (datasets that fit: NYUv2, Cityscapes, the embedded ones)."),
    sync_bn: bool = typer.Option(False, "--sync-bn", help="Under torchrun: batch-norm statistics over all processes (SyncBatchNorm)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Losses, DGR's penalties and pull, the method's weights and test metrics to RUN/tb/ (needs the tensorboard extra)."),
    log_every: int = typer.Option(_T.log_every, help="Watch every N-th step (and the first): diagnostics, TensorBoard, the NaN check."),
    out: Path = typer.Option(Path(_T.out_dir), help="Folder that receives the run folder."),
    resume: Optional[Path] = typer.Option(None, help="Continue this run folder from its last finished epoch."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Default: on a terminal only."),
) -> None:
    """Train a multi-task encoder (vanilla, or with --dgr)."""
    if resume is not None:  # the run's stored config wins; a larger --epochs extends it
        config = TrainConfig(epochs=epochs)
        from repeval.training.loop import train as run_training

        with saying_where_training_stopped():
            typer.echo(str(run_training(config, resume_dir=resume)))
        return
    check_data_dir(dataset, data_dir, embedded_ok=True)  # TrainConfig names the embedded case
    check_switched_options("--dgr", dgr, locals(), DGR_DEFAULTS)
    dataset_args = {"split_seed": split_seed, **parse_key_values(data_option, "--data-option")}
    method_args = parse_key_values(method_option, "--method-option")
    if task is not None:
        method_args["task"] = task
    if rep_grad:
        method_args["rep_grad"] = True
    config = TrainConfig(
        dataset=dataset,
        data_dir=None if data_dir is None else str(data_dir),
        dataset_args=dataset_args,
        tasks=None if tasks is None else tuple(t.strip() for t in tasks.split(",")),
        arch=arch,
        arch_args=parse_key_values(arch_option, "--arch-option"),
        backbone=backbone,
        pretrained_file=None if pretrained_file is None else str(pretrained_file),
        hidden=hidden,
        head_relu=head_relu,
        aspp_width=aspp_width,
        aspp_rates=aspp_rates,
        optimizer=optimizer,
        schedule=schedule,
        method=method,
        method_args=method_args,
        dgr=DGRConfig(lam=dgr_lambda, dummies=dgr_dummies, penalty=dgr_penalty, estimator=dgr_estimator,
                      eps=dgr_eps, dummy_seed=dgr_seed, order=dgr_order, fd_scheme=dgr_fd_scheme) if dgr else None,
        lr=lr, weight_decay=weight_decay, epochs=epochs, batch_size=batch_size, lr_step=lr_step,
        lr_gamma=lr_gamma, seed=seed, device=device, precision=precision, channels_last=channels_last,
        num_workers=parse_workers(num_workers), data_on_device=data_on_device, sync_bn=sync_bn, out_dir=str(out),
        tensorboard=tensorboard, log_every=log_every,
        progress=progress_default() if progress is None else progress,
    )
    from repeval.training.loop import train as run_training

    with saying_where_training_stopped():
        run_dir = run_training(config)
    from repeval.distributed import is_main_process

    if is_main_process():  # under torchrun, rank 0 made the run folder
        typer.echo(str(run_dir))


@app.command(epilog=help_epilog("probes"))
def probe(
    checkpoints: list[Path] = typer.Argument(None, help="repeval checkpoint files (checkpoint.pt) or run folders."),
    classifiers: Optional[str] = typer.Option(None, help=f"Comma list, {one_of(PROBES.names())} (default dt,svm,knn)."),
    seeds: str = typer.Option("0", help="Comma list of seeds; several give mean ± std."),
    tune: bool = typer.Option(_P.tune, "--tune/--no-tune", help="Choose hyperparameters by CV on the training split."),
    jobs: int = typer.Option(_P.jobs, help="Parallel probe fits (-1: all cores)."),
    tsne: bool = typer.Option(False, "--tsne/--no-tsne", help="Also draw t-SNE maps (Figure 3b layout)."),
    umap: bool = typer.Option(False, "--umap/--no-umap", help="Also draw UMAP maps."),
    max_points: int = typer.Option(MAP_MAX_POINTS, help="Test samples shown in the maps."),
    timm: TimmName = None,
    pretrained_file: TimmWeights = None,
    dataset: TimmDataset = None,
    data_dir: DataDirOverride = None,
    data_option: DataOptions = [],  # noqa: B006 - typer reads the default, never mutates it
    device: Device = "auto",
    batch_size: int = typer.Option(EXTRACT_BATCH, help="Extraction batch size."),
    cache: bool = typer.Option(True, "--cache/--no-cache", help="Re-use cached embeddings."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default runs/probe-<time>)."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Default: on a terminal only."),
    universality: bool = typer.Option(False, "--universality/--no-universality", help="Also measure universality."),
    head: str = typer.Option(_U.head, help=f"Universality head family, {one_of(UNIVERSALITY_HEADS)}."),
    n_random: int = typer.Option(_U.n_random, help="Random heads per task for --universality."),
    optimal: OptimalReading = _U.optimal,
    standardize: bool = typer.Option(False, "--standardize/--no-standardize", help="Standardise embeddings first."),
) -> None:
    """Freeze encoders, fit probes on their embeddings, write probe.json/.csv and plots."""
    config = ProbeConfig(classifiers=parse_classifiers(classifiers or ",".join(_P.classifiers)), seeds=parse_seeds(seeds), tune=tune, jobs=jobs)
    check_number("repeval probe", "max_points", max_points, kind=int, low=10)
    check_number("repeval probe", "batch_size", batch_size, kind=int, low=1)
    check_switched_options("--universality", universality, locals(), UNIVERSALITY_DEFAULTS)
    out = out or Path("runs") / f"probe-{time.strftime('%Y%m%d-%H%M%S')}"
    check_output_dir(out)
    from repeval.probes.workflow import probe as run_probe_workflow
    from repeval.training.loop import resolve_device

    measure = UniversalityConfig(n_random=n_random, head=head, optimal=optimal, standardize=standardize)
    given = [o for o, on in (("--classifiers", classifiers), ("--tsne", tsne), ("--umap", umap), ("--tune", tune)) if on]
    if probe_dense_checkpoints(checkpoints, timm, out, device, ",".join(config.classifiers), universality=universality, n_random=n_random,
                               head=head, seed=config.seeds[0], optimal=optimal, per_image_options=given):
        return
    sources = encoder_sources(checkpoints, timm, pretrained_file, dataset, data_dir, data_option)
    maps = tuple(m for m, on in (("tsne", tsne), ("umap", umap)) if on)
    run_probe_workflow(sources, config, out, maps=maps, max_points=max_points, universality=measure if universality else None,
                       device=str(resolve_device(device)), batch_size=batch_size, use_cache=cache,
                       progress=progress_default() if progress is None else progress, console=make_console())
    typer.echo(str(out))


@app.command("universality")
def universality_command(
    checkpoints: list[Path] = typer.Argument(None, help="repeval checkpoints or run folders."),
    head: str = typer.Option(_U.head, help=f"{one_of(UNIVERSALITY_HEADS)} (linear: convex, Theorem 1's setting)."),
    n_random: int = typer.Option(_U.n_random, help="Random heads per task."),
    hidden: int = typer.Option(_U.hidden, help="Hidden width of MLP heads."),
    optimal: OptimalReading = _U.optimal,
    cv: CvFolds = _U.cv,
    l2_grid: L2Grid = None,
    max_epochs: MaxEpochs = _U.max_epochs,
    restarts: Optional[int] = typer.Option(None, help="train-fit: L-BFGS restarts (default 1 linear, 3 mlp)."),
    tol: float = typer.Option(_U.tol, help="Gradient-norm tolerance of the optimal head."),
    l2: float = typer.Option(_U.l2, help="train-fit: fixed L2 penalty on the optimal head's weights."),
    standardize: bool = typer.Option(False, "--standardize/--no-standardize", help="Standardise embeddings first."),
    seed: int = typer.Option(0),
    timm: TimmName = None,
    pretrained_file: TimmWeights = None,
    dataset: TimmDataset = None,
    data_dir: DataDirOverride = None,
    data_option: DataOptions = [],  # noqa: B006
    device: Device = "auto",
    out: Optional[Path] = typer.Option(None, help="Output folder (default runs/universality-<time>)."),
) -> None:
    """Universality (paper Definition 2) and the gradient-norm proxy (Theorem 1) per task."""
    out = out or Path("runs") / f"universality-{time.strftime('%Y%m%d-%H%M%S')}"
    from repeval.probes.workflow import extract_all, universality_of
    from repeval.training.loop import resolve_device

    config = UniversalityConfig(n_random=n_random, head=head, hidden=hidden, optimal=optimal, cv=cv,
                                l2_grid=None if l2_grid is None else parse_float_list(l2_grid, "--l2-grid"),
                                max_epochs=max_epochs, restarts=restarts, tol=tol, standardize=standardize, seed=seed, l2=l2)
    check_output_dir(out)
    if probe_dense_checkpoints(checkpoints, timm, out, device, None, universality=True, n_random=n_random, seed=seed,
                               head=head, optimal=optimal, cv=cv):
        return
    sets = extract_all(encoder_sources(checkpoints, timm, pretrained_file, dataset, data_dir, data_option),
                       device=str(resolve_device(device)))
    universality_of(sets, config, out, make_console())
    typer.echo(str(out))


@app.command()
def tsne(
    checkpoints: list[Path] = typer.Argument(..., help="Checkpoints to map side by side."),
    method: str = typer.Option("tsne", help=f"{one_of(MAP_METHODS)}."),
    max_points: int = typer.Option(MAP_MAX_POINTS, help="Test samples shown."),
    seed: int = typer.Option(0),
    data_dir: DataDirOverride = None,
    device: Device = "auto",
    out: Optional[Path] = typer.Option(None, help="Output folder (default runs/tsne-<time>)."),
) -> None:
    """2-D maps of the shared representation: one row per task, one column per checkpoint."""
    check_choice("repeval tsne", "method", method, MAP_METHODS)
    check_number("repeval tsne", "max_points", max_points, kind=int, low=10)
    check_seed("repeval tsne", "seed", seed)
    out = out or Path("runs") / f"{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_output_dir(out)
    from repeval.probes.report import embedding_maps
    from repeval.probes.workflow import extract_all
    from repeval.training.loop import resolve_device

    sets = extract_all(encoder_sources(checkpoints, None, None, None, data_dir, []), device=str(resolve_device(device)))
    from repeval.distributed import is_main_process

    if is_main_process():  # under torchrun the ranks share the extraction; rank 0 draws
        embedding_maps(sets, out, method=method, max_points=max_points, seed=seed)
    typer.echo(str(out))


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), help="Folder for the demo's runs and summary."),
    epochs: Optional[int] = typer.Option(None, help="Override the MultiDigits default epochs."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Default: on a terminal only."),
) -> None:
    """Train vanilla and DGR encoders on the embedded MultiDigits data and compare them."""
    if epochs is not None:
        check_number("repeval demo", "epochs", epochs, kind=int, low=1)
    check_output_dir(out)
    from repeval.app.demo import run_demo

    with saying_where_training_stopped():
        run_demo(out, epochs=epochs, progress=progress_default() if progress is None else progress)


@app.command(epilog=help_epilog("methods"))
def sweep(
    config: Path = typer.Argument(..., help="Sweep file (.toml or .json); format in docs/sweeps.md."),
    out: Path = typer.Option(Path("runs/sweeps"), help="Folder that receives <sweep name>/<run>/."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the Table-1 report when done."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Check the plan, print its runs and size, create nothing."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Default: on a terminal only."),
) -> None:
    """Run a grid of trainings (methods x +-DGR x lambda x seeds); run it again to continue it."""
    from repeval.training.sweep import read_sweep_file
    from repeval.training.sweep_plan import describe_plan, plan_sweep

    spec = read_sweep_file(config)
    runs = plan_sweep(spec, one_dataset=report)  # the whole plan is checked before any folder is made
    if dry_run:
        return typer.echo(describe_plan(runs, out / spec["name"]))
    check_output_dir(out)
    from repeval.training.reproduce import sweep_and_report

    with saying_where_training_stopped():
        written = sweep_and_report(spec, out, progress_default() if progress is None else progress, report=report, runs=runs)
    for where, text in written:
        typer.echo(text)
        typer.echo(f"report: {where}")


@app.command()
def reproduce(
    protocol: str = typer.Argument(..., help=f"Paper protocol, {one_of(PROTOCOLS)}."),
    data_dir: Optional[Path] = typer.Option(None, help="The dataset folder (UTKFace/, or NYUv2's or Cityscapes' preprocessed layout)."),
    pretrained_file: Optional[Path] = typer.Option(None, help="Backbone weights (utkface: ImageNet resnet50; sensitivity: the Swin's)."),
    dataset: Optional[str] = typer.Option(None, help="sensitivity: nyuv2, cityscapes or scenes (embedded)."),
    table: str = typer.Option("all", help="sensitivity: a (dummies, task counts), b (Swin) or all."),
    smoke: bool = typer.Option(False, "--smoke", help="Tiny settings: checks the whole pipeline in minutes on a CPU (scene protocols: on generated data when no --data-dir)."),
    out: Path = typer.Option(Path("runs/sweeps"), help="Folder that receives the sweep."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help="Default: on a terminal only."),
) -> None:
    """Run a paper protocol as resumable sweeps, then report them: utkface (Table 1, Figure 2),
    nyuv2 / cityscapes (Tables 2-3, SPLIT and MTAN) or sensitivity (Table 4)."""
    check_output_dir(out)
    from repeval.training.reproduce import run_protocol

    with saying_where_training_stopped():
        written = run_protocol(protocol, data_dir, out, smoke, progress_default() if progress is None else progress,
                               pretrained_file, dataset, table)
    for where, text in written:
        typer.echo(text)
        typer.echo(f"report: {where}")


@app.command()
def report(
    runs: list[Path] = typer.Argument(..., help="Run folders or sweep folders (searched recursively)."),
    out: Path = typer.Option(Path("runs/report"), help="Folder for table.md/.csv/.tex, delta_mtl.png and report.json."),
    delta: str = typer.Option("per-task", help=f"Delta_MTL averaging, {one_of(DELTA_VARIANTS)}."),
    baseline: Optional[str] = typer.Option(None, help=f"Published single-task numbers for Delta_MTL, {one_of(PUBLISHED_BASES)} (default: the single-task runs among RUNS)."),
    select: str = typer.Option("final", help="final: the last epoch's test metrics; best-on-test: each metric's best epoch, chosen on the test set (labelled as such)."),
) -> None:
    """Table-1 style results (mean ± std over seeds, Δ_MTL vs single-task runs) and the Figure-2 chart."""
    check_choice("repeval report", "delta", delta, DELTA_VARIANTS)
    if baseline is not None:
        check_choice("repeval report", "baseline", baseline, tuple(PUBLISHED_BASES))
    check_choice("repeval report", "select", select, ("final", "best-on-test"))
    check_output_dir(out)
    from repeval.training.results import write_report

    where, table = write_report(runs, out, variant=delta, baseline=baseline, selection=select)
    typer.echo(table)  # with its notes: the Δ sign convention, DGR's pull
    typer.echo(f"report: {where}")


@app.command("compare")
def compare_command(
    group_a: list[str] = typer.Option(..., "--a", help="Runs (or folders of runs, or a quoted glob) of configuration A, one per seed; repeatable."),
    group_b: list[str] = typer.Option(..., "--b", help="Runs of configuration B, with A's seeds; repeatable."),
    out: Optional[Path] = typer.Option(None, help="Folder for compare.json and compare.md."),
) -> None:
    """Paired comparison of two configurations over shared training seeds: B − A per task, its 95 %
    interval, and a verdict ("better", "worse" or "no detectable difference at n = ...")."""
    if out is not None:
        check_output_dir(out)
    from repeval.training.paired import compare, write_comparison

    comparisons, table = compare(expand(group_a, "--a"), expand(group_b, "--b"))
    typer.echo(table)
    if out is not None:
        write_comparison(out, group_a, group_b, comparisons, table)
        typer.echo(f"compare: {out}")


app.command("check-data", epilog=help_epilog("datasets"))(check_data)
app.command("list")(list_entries)


@app.command()
def version() -> None:
    """Print the package version."""
    typer.echo(__version__)
