"""The training loop: short, top to bottom. Methods and DGR hook in as objects."""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from repeval import datasets
from repeval.checkpoint import make_checkpoint
from repeval.datasets import DatasetBundle, InputNormalizer, collate_batch
from repeval.errors import InvalidChoiceError, NonFiniteLossError
from repeval.models import MultiTaskModel, build_encoder
from repeval.training import run as run_files
from repeval.training.config import TrainConfig
from repeval.training.dgr import DummyGradientRegularizer, with_gradient
from repeval.training.distributed import epoch_sampler, is_main_process
from repeval.training.methods import Method, ParamGroups, create_method
from repeval.training.methods.base import Pass, StepContext

log = logging.getLogger("repeval")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidChoiceError("--device cuda was asked for but no CUDA device is available; use auto or cpu")
    return torch.device(name)


@dataclass
class Batch:
    """A batch on the device: normalised float images and one label vector per task."""

    x: torch.Tensor
    ys: list[torch.Tensor]


def to_device(images: torch.Tensor, labels: torch.Tensor, normalize: InputNormalizer, device: torch.device) -> Batch:
    # uint8 crosses the bus (pinned, non-blocking) and is normalised on the device.
    images = images.to(device, non_blocking=True)
    labels = labels.to(device, non_blocking=True)
    x = normalize(images)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    return Batch(x, list(labels.unbind(dim=1)))


def autocast(device: torch.device):
    """bf16 autocast on CUDA only; CPU runs in float32."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_model(config: TrainConfig, bundle: DatasetBundle) -> MultiTaskModel:
    encoder = build_encoder(config.backbone, in_chans=bundle.input.channels, pretrained_file=config.pretrained_file)
    return MultiTaskModel(
        encoder,
        bundle.tasks,
        hidden=config.hidden,
        dummies=config.dgr.dummies if config.dgr else 0,
        dummy_seed=config.dgr.dummy_seed if config.dgr else 0,
    )


def model_config(config: TrainConfig, bundle: DatasetBundle, model: MultiTaskModel) -> dict:
    return dict(
        backbone=config.backbone,
        in_chans=bundle.input.channels,
        num_features=model.num_features,
        hidden=config.hidden,
        dummies=config.dgr.dummies if config.dgr else 0,
        dummy_seed=config.dgr.dummy_seed if config.dgr else 0,
        pretrained_file=config.pretrained_file,
    )


def param_groups(model: MultiTaskModel) -> ParamGroups:
    return ParamGroups(list(model.encoder.parameters()), [list(model.heads[t.name].parameters()) for t in model.tasks])


def forward_pass(model: MultiTaskModel, regularizer: DummyGradientRegularizer | None, batch: Batch) -> Pass:
    """The training forward: task losses, z, and DGR's gradient at z (after the combination by
    default; with `order="before"` it enters each task's loss instead, see `dgr.with_gradient`)."""
    with autocast(batch.x.device):
        z = model.encode(batch.x)
        logits = model.predict(z)
    losses = torch.stack([F.cross_entropy(lg.float(), y) for lg, y in zip(logits, batch.ys)])
    if regularizer is None:
        return Pass(losses, z, None, None)
    z_grad, penalties = regularizer(z, batch.ys)
    if regularizer.config.order == "before":
        return Pass(losses + with_gradient(z, z_grad), z, None, penalties)
    return Pass(losses, z, z_grad, penalties)


def functional_task_losses(model: MultiTaskModel, batch: Batch, params: dict[str, torch.Tensor]) -> torch.Tensor:
    """Task losses [K] of the model run with `params` in place of its own parameters."""
    with autocast(batch.x.device):
        logits = torch.func.functional_call(model, params, (batch.x,))
    return torch.stack([F.cross_entropy(lg.float(), y) for lg, y in zip(logits, batch.ys)])


def training_step(
    model: MultiTaskModel,
    batch: Batch,
    method: Method,
    regularizer: DummyGradientRegularizer | None,
    optimizer: torch.optim.Optimizer,
    params: ParamGroups | None = None,
    meta_batch: Batch | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One optimisation step. Returns the detached task losses and DGR penalties (no sync).
    `params` (from `param_groups(model)`) can be built once per run and passed in."""
    ctx = StepContext(
        model=model, batch=batch, forward=partial(forward_pass, model, regularizer),
        task_losses=partial(functional_task_losses, model), optimizer=optimizer,
        params=params or param_groups(model), meta_batch=meta_batch,
    )
    out = method.step(ctx)
    return out.losses.detach(), out.penalties


@torch.inference_mode()
def evaluate(model: MultiTaskModel, loader: DataLoader, bundle: DatasetBundle, device: torch.device) -> list[float]:
    """Test accuracy of each task head."""
    model.eval()
    normalize = InputNormalizer(bundle.input, device)
    correct = torch.zeros(len(bundle.tasks), device=device)
    seen = 0
    for images, labels in loader:
        batch = to_device(images, labels, normalize, device)
        with autocast(device):
            logits = model(batch.x)
        correct += torch.stack([(lg.argmax(1) == y).sum() for lg, y in zip(logits, batch.ys)])
        seen += len(images)
    model.train()
    return (correct / max(seen, 1)).tolist()


def train(config: TrainConfig, resume_dir: str | Path | None = None, run_dir: str | Path | None = None) -> Path:
    """Train a multi-task encoder; returns the run folder. `resume_dir` continues a run from its
    last finished epoch (its stored config wins over `config`). `run_dir` names the new run's
    folder (it must not hold files; default: a fresh `<out_dir>/<dataset>-<method>-<time>`).

    >>> from repeval.training.dgr import DGRConfig
    >>> run_dir = train(TrainConfig(dataset="multidigits", dgr=DGRConfig(), epochs=2))  # doctest: +SKIP
    >>> sorted(p.name for p in run_dir.iterdir())  # doctest: +SKIP
    ['checkpoint.pt', 'config.json', 'metrics.jsonl', 'train_state.pt']
    """
    if resume_dir is not None:
        config = run_files.read_config(Path(resume_dir))
    config = config.resolved()
    device = resolve_device(config.device)
    torch.manual_seed(config.seed)

    bundle = datasets.build(config.dataset, **config.dataset_kwargs())
    model = build_model(config, bundle).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    task_names = [t.name for t in bundle.tasks]
    method = create_method(config.method, len(bundle.tasks), **config.method_args)
    method.attach(model)
    method.to(device)
    regularizer = (
        DummyGradientRegularizer([model.dummy_heads[n] for n in task_names], config.dgr, tasks=method.trained_tasks)
        if config.dgr else None
    )
    optimizer = torch.optim.Adam([*model.parameters(), *method.parameters()], lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.lr_step or 10**9, gamma=config.lr_gamma)

    start_epoch = 0
    if resume_dir is not None:
        run_dir = Path(resume_dir)
        ckpt, state = run_files.load_resume_state(run_dir)
        model.load_state_dict(_model_state(ckpt), strict=True)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        method.load_state_dict(state["method"])
        torch.set_rng_state(state["rng"])
        start_epoch = ckpt["epoch"] + 1
    elif is_main_process():
        run_dir = run_files.new_run_dir(config) if run_dir is None else run_files.empty_run_dir(Path(run_dir))
        run_files.write_config(run_dir, config, bundle.report)

    pin = device.type == "cuda"
    normalize = InputNormalizer(bundle.input, device)
    params = param_groups(model)
    test_loader = DataLoader(
        bundle.test, batch_size=max(256, config.batch_size), collate_fn=collate_batch,
        num_workers=config.num_workers, pin_memory=pin,
    )
    metrics: dict = {}
    for epoch in range(start_epoch, config.epochs):
        loader = train_loader(bundle, config, epoch, config.seed, pin)
        # Auto-lambda's meta batches: the training set again, in an independent order (as the
        # authors' code does), seeded per epoch so --resume replays them.
        meta_batches = iter(train_loader(bundle, config, epoch, config.seed + 1, pin)) if method.needs_meta_batch else None
        loss_sum = torch.zeros(len(task_names), device=device)
        penalty_sum = torch.zeros(len(task_names), device=device)
        first_bad_step = torch.tensor(-1, device=device)
        started, seen = time.perf_counter(), 0
        bar = tqdm(total=len(bundle.train), unit="img", desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not (config.progress and is_main_process()), leave=False)
        for step, (images, labels) in enumerate(loader):
            batch = to_device(images, labels, normalize, device)
            meta_batch = to_device(*next(meta_batches), normalize, device) if meta_batches else None
            losses, penalties = training_step(model, batch, method, regularizer, optimizer, params, meta_batch)
            loss_sum += losses * len(images)
            finite = torch.isfinite(losses).all()
            if penalties is not None:
                penalty_sum += penalties * len(images)
                finite &= torch.isfinite(penalties).all()
            first_bad_step = torch.where(~finite & (first_bad_step < 0), step, first_bad_step)
            seen += len(images)
            bar.update(len(images))
            if (step + 1) % config.log_every == 0:  # the only host syncs of the epoch
                _raise_if_nonfinite(first_bad_step, epoch, run_dir)
                bar.set_postfix(loss=f"{(loss_sum.sum() / seen).item():.3f}")
        bar.close()
        _raise_if_nonfinite(first_bad_step, epoch, run_dir)
        scheduler.step()

        mean_losses = loss_sum / max(seen, 1)
        method.on_epoch_end(epoch, mean_losses)
        accuracy = evaluate(model, test_loader, bundle, device)
        metrics = {
            "epoch": epoch,
            "train_loss": dict(zip(task_names, mean_losses.tolist())),
            "test_accuracy": dict(zip(task_names, accuracy)),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - started, 3),
            "images_per_second": round(seen / (time.perf_counter() - started), 1),
        }
        if regularizer is not None:
            metrics["dgr_penalty"] = dict(zip(task_names, (penalty_sum / max(seen, 1)).tolist()))
        if is_main_process():
            ckpt = make_checkpoint(
                model, model_config=model_config(config, bundle, model),
                dataset={"name": bundle.name, "args": bundle.args}, input_spec=bundle.input,
                train_config=config.to_dict(), metrics=metrics, epoch=epoch,
            )
            state = {
                "epoch": epoch, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "method": method.state_dict(), "rng": torch.get_rng_state(),
            }
            run_files.save_epoch(run_dir, ckpt, state, metrics)
            accs = "  ".join(f"{n}={a:.3f}" for n, a in zip(task_names, accuracy))
            log.info("epoch %d/%d  test accuracy %s  (%.0f img/s)", epoch + 1, config.epochs, accs,
                     metrics["images_per_second"])
    return run_dir


def train_loader(bundle: DatasetBundle, config: TrainConfig, epoch: int, seed: int, pin: bool) -> DataLoader:
    return DataLoader(
        bundle.train, batch_size=config.batch_size, sampler=epoch_sampler(bundle.train, seed, epoch),
        collate_fn=collate_batch, num_workers=config.num_workers, pin_memory=pin,
        # A one-sample last batch breaks batch norm in training mode; the shuffle differs each
        # epoch, so dropping the incomplete batch costs no sample for good.
        drop_last=len(bundle.train) > config.batch_size,
    )


def _model_state(ckpt: dict) -> dict:
    state = {f"encoder.{k}": v for k, v in ckpt["encoder"].items()}
    for group in ("heads", "dummy_heads"):
        for task, sd in ckpt[group].items():
            state.update({f"{group}.{task}.{k}": v for k, v in sd.items()})
    return state


def _raise_if_nonfinite(first_bad_step: torch.Tensor, epoch: int, run_dir: Path) -> None:
    step = int(first_bad_step.item())
    if step >= 0:
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch + 1}, step {step + 1}: training stopped; the last good "
            f"checkpoint (if any) in {run_dir} is intact"
        )
