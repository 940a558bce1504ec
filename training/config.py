"""Typed training configuration. The CLI converts its options into a `TrainConfig`; the library
never sees typer objects."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from repeval import datasets
from repeval.errors import InvalidChoiceError, check_choice, check_number
from repeval.training.dgr import DGRConfig
from repeval.training.methods import METHODS, create_method

DEVICES = ("auto", "cpu", "cuda")

# Per-dataset defaults for options left as None. UTKFace follows the paper (ResNet-50, batch 64,
# 100 epochs, step decay by 0.5 every third of training); its lr is the paper's 1e-5 when
# ImageNet weights are given (--pretrained-file) and 1e-3 from scratch, where 1e-5 barely moves.
# MultiDigits defaults fit the 5-minute demo on a 2-core CPU.
DATASET_DEFAULTS: dict[str, dict] = {
    "multidigits": dict(backbone="test_resnet", epochs=6, lr=2e-3, pretrained_lr=2e-3, lr_step=2),
    "utkface": dict(backbone="resnet50", epochs=100, lr=1e-3, pretrained_lr=1e-5, lr_step=None),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on; `config.json` stores it and `--resume` reads it.

    Options left as None take the dataset's default (`DATASET_DEFAULTS`) in `resolved()`.
    `lr_step=None` decays every third of the epochs (the authors' StepLR(e/3, 0.5)); 0 never.

    >>> cfg = TrainConfig(dataset="multidigits", dgr=DGRConfig(), epochs=2).resolved()
    >>> cfg.backbone, cfg.lr, cfg.dgr.lam
    ('test_resnet', 0.002, 0.3)
    """

    dataset: str = "multidigits"
    data_dir: str | None = None
    dataset_args: dict = field(default_factory=dict)
    backbone: str | None = None
    pretrained_file: str | None = None
    hidden: int = 64
    method: str = "ew"
    method_args: dict = field(default_factory=dict)
    dgr: DGRConfig | None = None
    lr: float | None = None
    weight_decay: float = 0.0
    epochs: int | None = None
    batch_size: int = 64
    lr_step: int | None = None
    lr_gamma: float = 0.5
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    log_every: int = 20
    out_dir: str = "runs"
    progress: bool = True

    def __post_init__(self) -> None:
        owner = "TrainConfig"
        datasets.DATASETS.get(self.dataset)  # unknown names raise the registry's message
        METHODS.get(self.method)
        # Built once here (2 tasks stand in for the dataset's) so a bad option value fails now,
        # not when a sweep reaches this run.
        create_method(self.method, 2, **self.method_args)
        check_choice(owner, "device", self.device, DEVICES)
        check_number(owner, "hidden", self.hidden, kind=int, low=1)
        check_number(owner, "batch_size", self.batch_size, kind=int, low=1)
        check_number(owner, "weight_decay", self.weight_decay, low=0.0)
        check_number(owner, "lr_gamma", self.lr_gamma, low=0.0, low_open=True)
        check_number(owner, "num_workers", self.num_workers, kind=int, low=0)
        check_number(owner, "log_every", self.log_every, kind=int, low=1)
        if self.lr is not None:
            check_number(owner, "lr", self.lr, low=0.0, low_open=True)
        if self.epochs is not None:
            check_number(owner, "epochs", self.epochs, kind=int, low=1)
        if self.lr_step is not None:
            check_number(owner, "lr_step", self.lr_step, kind=int, low=0)
        if self.dataset in datasets.NEEDS_DATA_DIR and "data_dir" in self.dataset_args:
            raise InvalidChoiceError("pass the data folder as TrainConfig.data_dir, not in dataset_args")

    def resolved(self) -> TrainConfig:
        """A copy with every None default filled in from the dataset's defaults."""
        d = DATASET_DEFAULTS.get(self.dataset, {})
        epochs = self.epochs or d.get("epochs", 10)
        lr = self.lr or (d.get("pretrained_lr", 1e-5) if self.pretrained_file else d.get("lr", 1e-3))
        lr_step = self.lr_step
        if lr_step is None:
            lr_step = d.get("lr_step") or max(1, epochs // 3)
        dgr = None if self.dgr is None else replace(self.dgr, lam=self.dgr.strength)
        return replace(
            self, backbone=self.backbone or d.get("backbone", "resnet50"),
            epochs=epochs, lr=lr, lr_step=lr_step, dgr=dgr,
        )

    def dataset_kwargs(self) -> dict:
        kwargs = dict(self.dataset_args)
        if self.dataset in datasets.NEEDS_DATA_DIR:
            kwargs["data_dir"] = self.data_dir
        return kwargs

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dgr"] = None if self.dgr is None else asdict(self.dgr)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if d.get("dgr") is not None:
            d["dgr"] = DGRConfig(**d["dgr"])
        return cls(**d)
