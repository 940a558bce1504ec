"""The training loop: short, top to bottom. Methods and DGR hook in as objects; the step itself
is `repeval.training.step`, the run folder's files `repeval.training.run`."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from repeval import datasets
from repeval.archs import build_arch_encoder
from repeval.checkpoint import make_checkpoint
from repeval.datasets import DatasetBundle, InputNormalizer, collate_batch
from repeval.datasets.device import DeviceLoader, DeviceSplit, bytes_on_device
from repeval.distributed import (
    barrier, epoch_sampler, init_from_env, is_main_process, maximum_, rank, rng_states, shard, sum_, world_size,
)
from repeval.errors import InvalidChoiceError, NonFiniteLossError, TrainingInterrupted
from repeval.kinds import kind_of
from repeval.models import MultiTaskModel, to_channels_last
from repeval.resources import check_fits
from repeval.storage import check_output_dir, folder_lock
from repeval.training import run as run_files
from repeval.training.config import TrainConfig, check_options_apply
from repeval.training.dgr import DummyGradientRegularizer
from repeval.training.diagnostics import StepWatch, method_values, named
from repeval.training.epoch_stats import EpochAccumulator, EpochStats
from repeval.training.scalars import ScalarLog, Throughput, open_scalar_log
from repeval.training.methods import Method, ParamGroups, create_method
from repeval.training.resume import restore
from repeval.training.step import Batch, Execution, autocast, param_groups, resolve_device, to_device, training_step

__all__ = ["train", "evaluate", "build_training", "Training", "Batch", "training_step", "resolve_device"]

log = logging.getLogger("repeval")


def build_model(config: TrainConfig, bundle: DatasetBundle) -> MultiTaskModel:
    dense = any(kind_of(t).dense for t in bundle.tasks)
    encoder = build_arch_encoder(config.arch, config.backbone, num_tasks=len(bundle.tasks), in_chans=bundle.input.channels,
                                 dense=dense, input_size=(bundle.input.height, bundle.input.width),
                                 pretrained_file=config.pretrained_file, options=config.arch_args)
    return MultiTaskModel(
        encoder,
        bundle.tasks,
        dummies=config.dgr.dummies if config.dgr else 0,
        dummy_seed=config.dgr.dummy_seed if config.dgr else 0,
        head_config=config.head_config(),
        map_side=encoder.map_side(bundle.input.height, bundle.input.width) if dense else None,
    )


def model_config(config: TrainConfig, bundle: DatasetBundle, model: MultiTaskModel) -> dict:
    return dict(
        arch=config.arch,
        arch_args=dict(config.arch_args),
        backbone=config.backbone,
        in_chans=bundle.input.channels,
        input_size=[bundle.input.height, bundle.input.width],
        num_features=model.num_features,
        hidden=model.head_config.hidden,
        heads=model.head_config.to_dict(),
        dense=model.map_side is not None,
        map_side=model.map_side,
        dummies=config.dgr.dummies if config.dgr else 0,
        dummy_seed=config.dgr.dummy_seed if config.dgr else 0,
        pretrained_file=config.pretrained_file,
    )


@torch.inference_mode()
def evaluate(model: MultiTaskModel, loader: DataLoader, bundle: DatasetBundle, device: torch.device,
             precision: str | None = None, channels_last: bool | None = None) -> dict[str, dict[str, float]]:
    """Every task kind's metrics over the whole test set: `{task: {metric: value}}`. Outputs may
    be bf16 (`precision`); the metrics' sums and counts are float64."""
    model.eval()
    normalize = InputNormalizer(bundle.input, device)
    metrics = [kind.metric(device) for kind in model.kinds]
    for images, targets in loader:
        batch = to_device(images, targets, normalize, device, channels_last)
        with autocast(device, precision):
            outputs = model(batch.x)
        for kind, metric, out, y in zip(model.kinds, metrics, outputs, batch.ys):
            metric.update(kind.predict(out, y.shape[-2:] if kind.dense else None), y)
    model.train()
    for metric in metrics:  # torchrun: each rank saw its shard; the states are additive
        sum_(metric.state)
    return {t.name: m.compute() for t, m in zip(bundle.tasks, metrics)}


@dataclass
class Training:
    """What one run trains with, built from its config before any file is written."""

    config: TrainConfig
    execution: Execution  # device, precision, memory format and loader workers, resolved
    bundle: DatasetBundle
    model: MultiTaskModel
    method: Method
    regularizer: DummyGradientRegularizer | None
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    normalize: InputNormalizer  # built once per run: no host copy of mean/std in the step
    params: ParamGroups  # built once per run
    on_device: dict[str, DeviceSplit] | None = None  # --data-on-device: the splits, held on the device

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.bundle.tasks]

    @property
    def device(self) -> torch.device:
        return self.execution.device


def build_training(config: TrainConfig) -> Training:
    """Seed, data, model, method, DGR, optimiser: the state every run starts from. Raises on
    data that cannot train (too few samples, an empty test split) before anything is saved."""
    execution = Execution.of(config.device, config.precision, config.channels_last, config.num_workers, config.data_on_device)
    device = execution.device
    torch.manual_seed(config.seed)
    bundle = datasets.build(config.dataset, **config.dataset_kwargs())
    check_splits(bundle)
    check_batch_fits(config, bundle, device)
    on_device = None
    if execution.data_on_device:
        check_fits(bytes_on_device(bundle.train) + bytes_on_device(bundle.test), "holding the dataset on the device",
                   device, "leave out --data-on-device")
        on_device = {"train": DeviceSplit(bundle.train, device), "test": DeviceSplit(bundle.test, device)}
    model = build_model(config, bundle).to(device)
    if world_size() > 1:
        if config.sync_bn:
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        torch.manual_seed(config.seed * 1_000_003 + rank())  # same initialisation, per-rank augmentation
    if execution.channels_last:
        model = to_channels_last(model)
    method = create_method(config.method, len(bundle.tasks), **config.method_args)
    method.attach(model)
    method.to(device)
    regularizer = (
        DummyGradientRegularizer([model.dummy_heads[t.name] for t in bundle.tasks], config.dgr, tasks=method.trained_tasks,
                                 per_task_z=model.per_task)
        if config.dgr else None
    )
    optimizer, scheduler = build_optimizer(config, [*model.parameters(), *method.parameters()])
    return Training(config, execution, bundle, model, method, regularizer, optimizer, scheduler,
                    InputNormalizer(bundle.input, device), param_groups(model), on_device)


def build_optimizer(config: TrainConfig, params: list[torch.Tensor]):
    """Adam with step decay (the UTKFace recipe), or SGD with momentum 0.9 and a cosine schedule
    over the run (the Auto-lambda/DGR scene recipe)."""
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.schedule == "cosine":
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return optimizer, torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step or 10**9, gamma=config.lr_gamma)


def check_splits(bundle: DatasetBundle) -> None:
    # Batch norm in training mode needs two samples in a batch; drop_last keeps every batch full.
    if len(bundle.train) < 2:
        raise InvalidChoiceError(
            f"dataset {bundle.name!r} has {len(bundle.train)} training sample(s) with {bundle.args}; "
            "training needs at least 2 (batch norm)"
        )
    if len(bundle.test) == 0:
        raise InvalidChoiceError(f"dataset {bundle.name!r} has an empty test split with {bundle.args}; "
                                 "give more data or a larger test fraction")


def check_batch_fits(config: TrainConfig, bundle: DatasetBundle, device: torch.device) -> None:
    """Refuse a batch larger than memory, judged by a lower bound: its float input, and each
    dense task's full-size output and that output's gradient (the network's activations come on top)."""
    h, w = bundle.input.height, bundle.input.width
    outputs = sum(kind_of(t).outputs for t in bundle.tasks if kind_of(t).dense)
    need = config.batch_size * h * w * 4 * (bundle.input.channels + 2 * outputs)
    check_fits(need, f"a batch of {config.batch_size} images of {h}x{w}", device, "lower --batch-size or the image size")


def train(config: TrainConfig, resume_dir: str | Path | None = None, run_dir: str | Path | None = None) -> Path:
    """Train a multi-task encoder; returns the run folder. `run_dir` names the new run's folder
    (it must not hold files; default: a fresh `<out_dir>/<dataset>-<method>-<time>`).

    `resume_dir` continues a run from its last committed epoch, whatever instant it was killed
    at; its stored config wins over `config`, except a larger `config.epochs`, which extends it.

    >>> from repeval.training.dgr import DGRConfig
    >>> run_dir = train(TrainConfig(dataset="multidigits", dgr=DGRConfig(), epochs=2))  # doctest: +SKIP
    >>> sorted(p.name for p in run_dir.iterdir())  # doctest: +SKIP
    ['checkpoint.pt', 'commit.json', 'config.json', 'metrics.jsonl', 'train_state.pt']
    """
    init_from_env(config.device)
    if resume_dir is not None:
        return _resume(Path(resume_dir), extend_to=config.epochs)
    check_options_apply(config)
    config = config.resolved()
    check_output_dir(config.out_dir if run_dir is None else run_dir, "--out")
    training = build_training(config)
    if not is_main_process():
        return _train_epochs(training, Path(run_dir or config.out_dir), 0)
    run_dir = run_files.new_run_dir(config) if run_dir is None else run_files.empty_run_dir(Path(run_dir))
    with folder_lock(run_dir, "run folder"):
        run_files.empty_run_dir(run_dir)
        run_files.write_config(run_dir, config, training.bundle.report, world_size(), training.execution.to_dict())
        return _train_epochs(training, run_dir, 0)


def _resume(run_dir: Path, extend_to: int | None) -> Path:
    config = run_files.read_config(run_dir)  # checked before the lock file is made
    if extend_to is not None and extend_to < config.epochs:
        raise InvalidChoiceError(
            f"--epochs {extend_to} is fewer than the {config.epochs} epochs of {str(run_dir)!r}; "
            "--resume can only extend a run"
        )
    with folder_lock(run_dir, "run folder") if is_main_process() else contextlib.nullcontext():
        # Rank 0 repairs the folder; the others read it once it has (torchrun).
        epoch = run_files.recover(run_dir) if is_main_process() else None
        barrier()
        epoch = epoch if is_main_process() else run_files.committed_epoch(run_dir)
        config = run_files.read_config(run_dir)
        extended = extend_to is not None and extend_to > config.epochs
        if extended:
            log.info("%s: extending the run from %d to %d epochs", run_dir, config.epochs, extend_to)
            config = replace(config, epochs=extend_to)
        training = build_training(config)
        if extended and is_main_process():
            run_files.rewrite_config(run_dir, config)
        if epoch is not None:
            restore(training, *run_files.load_resume_state(run_dir), run_dir)
        start = 0 if epoch is None else epoch + 1
        if start >= config.epochs:
            log.info("%s: all %d epochs are already trained; nothing to do (--epochs N extends it)", run_dir, config.epochs)
            return run_dir
        log.info("%s: resuming at epoch %d/%d", run_dir, start + 1, config.epochs)
        return _train_epochs(training, run_dir, start)


def _train_epochs(training: Training, run_dir: Path, start_epoch: int) -> Path:
    config, model, method = training.config, training.model, training.method
    epoch = start_epoch
    steps_per_epoch = len(train_loader(training, 0, config.seed))
    scalars = open_scalar_log(config.tensorboard and is_main_process(), run_dir, start_epoch * steps_per_epoch)
    try:
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            stats = train_one_epoch(training, epoch, run_dir, scalars)
            training.scheduler.step()
            method.on_epoch_end(epoch, stats.losses)
            test = evaluate(model, _test_loader(training), training.bundle, training.device,
                            training.execution.precision, training.execution.channels_last)
            metrics = epoch_metrics(training, epoch, stats, test, started)
            scalars.add((epoch + 1) * steps_per_epoch, epoch_scalars(metrics))
            states = rng_states()  # every rank's, gathered for rank 0 to save
            if is_main_process():
                save_epoch(training, run_dir, epoch, stats.steps, metrics, states)
                shown = "  ".join(f"{task}.{kind.primary}={test[task][kind.primary]:.4g}"
                                  for task, kind in zip(training.task_names, model.kinds))
                log.info("epoch %d/%d  test %s  (%.0f img/s)", epoch + 1, config.epochs, shown,
                         metrics["images_per_second"])
    except KeyboardInterrupt:
        raise TrainingInterrupted(
            f"interrupted in epoch {epoch + 1}/{config.epochs}; {run_dir} keeps every epoch it saved. "
            f"Continue with: repeval train --resume {run_dir}"
        ) from None
    finally:
        scalars.close()
    return run_dir


def train_one_epoch(training: Training, epoch: int, run_dir: Path, scalars: ScalarLog | None = None) -> EpochStats:
    """One pass over the training set: what `EpochStats` holds. The first step and every
    `log_every`-th are watched (`repeval.training.diagnostics`): their diagnostics' means go to
    the epoch's record, and each to `scalars` (TensorBoard)."""
    scalars = scalars or ScalarLog()
    config, bundle, execution = training.config, training.bundle, training.execution
    device, normalize = execution.device, training.normalize
    loader = train_loader(training, epoch, config.seed)
    # Auto-lambda's meta batches: the training set again, in an independent order (as the
    # authors' code does), seeded per epoch so --resume replays them.
    meta_batches = iter(train_loader(training, epoch, config.seed + 1)) if training.method.needs_meta_batch else None
    stats = EpochAccumulator(len(bundle.tasks), device, training.regularizer is not None)
    bar = tqdm(total=len(bundle.train), unit="img", desc=f"epoch {epoch + 1}/{config.epochs}",
               disable=not (config.progress and is_main_process()), leave=False)
    rate = Throughput()
    for step, (images, labels) in enumerate(loader):
        batch = to_device(images, labels, normalize, device, execution.channels_last)
        meta_batch = to_device(*next(meta_batches), normalize, device, execution.channels_last) if meta_batches else None
        watch = StepWatch(len(bundle.tasks)) if step == 0 or (step + 1) % config.log_every == 0 else None
        losses, penalties = training_step(training.model, batch, training.method, training.regularizer,
                                          training.optimizer, training.params, meta_batch, execution.precision, watch)
        stats.add(losses, penalties, training.model.task_present(batch.ys), len(images))
        rate.count(len(images))
        if watch is not None:
            values = {**watch.values, **method_values(training.method.diagnostics())}
            stats.add_watched(values)
            if scalars.enabled:  # a host sync, at watched steps only
                scalars.add(epoch * len(loader) + step + 1, {
                    **named({k: float(v) for k, v in values.items()}, training.task_names),
                    "lr": training.optimizer.param_groups[0]["lr"], "images_per_second": rate.take()})
        bar.update(len(images))
        if stats.steps % config.log_every == 0:  # the only host syncs of the epoch
            _raise_if_nonfinite(stats.first_bad_step, epoch, run_dir)
            bar.set_postfix(loss=f"{stats.running_loss():.3f}")
    bar.close()
    _raise_if_nonfinite(stats.first_bad_step, epoch, run_dir)
    return stats.totals()


def epoch_scalars(metrics: dict) -> dict[str, float]:
    """An epoch's `metrics.jsonl` line as TensorBoard scalars: test metrics and train losses."""
    out = {f"test/{task}/{name}": value for task, values in metrics["test"].items() for name, value in values.items()}
    out.update({f"train_loss_epoch/{task}": v for task, v in metrics["train_loss"].items() if v is not None})
    return out


def epoch_metrics(training: Training, epoch: int, stats: EpochStats, test: dict[str, dict[str, float]],
                  started: float) -> dict:
    seconds = time.perf_counter() - started
    metrics = {
        "epoch": epoch,
        **stats.record(training.task_names),
        "test": test,
        "lr": training.optimizer.param_groups[0]["lr"],
        "seconds": round(seconds, 3),
        "images_per_second": round(stats.seen / seconds, 1),
    }
    accuracy = {task: values["accuracy"] for task, values in test.items() if "accuracy" in values}
    if accuracy:  # what earlier versions recorded for classification tasks, and notebooks read
        metrics["test_accuracy"] = accuracy
    return metrics


def save_epoch(training: Training, run_dir: Path, epoch: int, steps: int, metrics: dict, states: list | None = None) -> None:
    config, bundle, model = training.config, training.bundle, training.model
    ckpt = make_checkpoint(
        model, model_config=model_config(config, bundle, model),
        dataset={"name": bundle.name, "args": bundle.args}, input_spec=bundle.input,
        train_config=config.to_dict(), metrics=metrics, epoch=epoch, execution=training.execution.to_dict(),
    )
    state = {
        "epoch": epoch, "step": steps, "optimizer": training.optimizer.state_dict(),
        "scheduler": training.scheduler.state_dict(), "method": training.method.state_dict(),
        "rng": torch.get_rng_state(), "rng_ranks": states or rng_states(),
    }
    run_files.save_epoch(run_dir, ckpt, state, metrics)


def _test_loader(training: Training) -> DataLoader | DeviceLoader:
    sampler = shard(len(training.bundle.test))
    # Dense outputs are input-sized maps: test batches as large as training ones, no larger.
    size = training.config.batch_size if training.model.map_side is not None else max(256, training.config.batch_size)
    if training.on_device is not None:
        return DeviceLoader(training.on_device["test"], sampler, size, drop_last=False)
    return DataLoader(training.bundle.test, collate_fn=collate_batch, sampler=sampler, batch_size=size,
                      num_workers=training.execution.num_workers, pin_memory=training.device.type == "cuda")


def train_loader(training: Training, epoch: int, seed: int) -> DataLoader | DeviceLoader:
    config, train, execution = training.config, training.bundle.train, training.execution
    sampler = epoch_sampler(train, seed, epoch)
    # A one-sample last batch breaks batch norm in training mode; the shuffle differs each
    # epoch, so dropping the incomplete batch costs no sample for good.
    drop_last = len(train) > config.batch_size
    if training.on_device is not None:
        return DeviceLoader(training.on_device["train"], sampler, config.batch_size, drop_last)
    return DataLoader(train, batch_size=config.batch_size, sampler=sampler, collate_fn=collate_batch,
                      num_workers=execution.num_workers, pin_memory=execution.device.type == "cuda", drop_last=drop_last)


def _raise_if_nonfinite(first_bad_step: torch.Tensor, epoch: int, run_dir: Path) -> None:
    step = int(maximum_(first_bad_step.clone()).item())  # a NaN on any rank stops every rank
    if step >= 0:
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch + 1}, step {step + 1}: training stopped; the last good "
            f"checkpoint (if any) in {run_dir} is intact"
        )
