"""Typed training configuration. The CLI converts its options into a `TrainConfig`; the library
never sees typer objects. Torch-free: the whole configuration is validated before torch loads
and before any file is created."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from repeval import datasets
from repeval.archs import check_arch
from repeval.defaults import ASPP_WIDTH, HEAD_HIDDEN
from repeval.errors import InvalidChoiceError, check_bool, check_choice, check_number, check_seed
from repeval.validation import from_mapping

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")  # auto: bf16 on CUDA devices that support it, fp32 elsewhere
OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("step", "cosine")
PENALTIES = ("norm", "squared")
ESTIMATORS = ("exact", "finite-diff")
# Finite differences: "central" (default) [L(phi + eps u) - L(phi - eps u)] / 2 eps, error O(eps^2);
# "forward", the authors' one-sided [L(phi + eps u) - L(phi)] / eps per task, error O(eps), one
# forward pass of the dummy heads cheaper (it matters where heads are large: DeepLabv3 on dense
# tasks); "authors", the DGR scene code's arithmetic exactly: one-sided, every task's dummy j
# stepped together along set j's joint gradient, the squared norm's factor taken as the
# difference quotient (see repeval.training.dgr).
FD_SCHEMES = ("central", "forward", "authors")
# Where DGR's gradient joins a multi-task method. "after" (default, the authors' code): added to
# the encoder gradient after the method has combined the task gradients, so it is never
# projected or reweighted. "before": task k's DGR gradient is part of task k's loss, so the
# method combines it like the task (free for every method: no extra backward).
ORDERS = ("after", "before")
# Chosen with benchmarks/dgr_scale.py (docs/dgr.md, "Choosing λ"): the smallest lambda of the
# grid {0.01, 0.1, 0.3, 1} that cuts the end-of-run penalty by at least a third against
# lambda=0 on MultiDigits without lowering test accuracy. The paper's grid (1e-5..1e-7) belongs
# to the authors' squared finite-difference code; at 1e-6 its gradient at z is ~4e-6 of the
# task gradient on ResNet-50 (measured at initialisation), i.e. it barely changes training.
DEFAULT_LAMBDA = {"norm": 0.3, "squared": 0.1}


@dataclass(frozen=True)
class DGRConfig:
    """Options of the regulariser; `lam=None` takes the default of the chosen penalty.

    >>> DGRConfig().strength, DGRConfig(penalty="squared").strength
    (0.3, 0.1)
    >>> DGRConfig(penalty="squared", estimator="finite-diff", eps=1e-4, dummies=1, lam=1e-6).strength
    1e-06
    """

    lam: float | None = None
    dummies: int = 3
    penalty: str = "norm"
    estimator: str = "exact"
    eps: float = 1e-3
    fd_scheme: str = "central"
    dummy_seed: int = 0
    order: str = "after"

    def __post_init__(self) -> None:
        check_choice("DGRConfig", "penalty", self.penalty, PENALTIES)
        check_choice("DGRConfig", "order", self.order, ORDERS)
        check_choice("DGRConfig", "estimator", self.estimator, ESTIMATORS)
        check_choice("DGRConfig", "fd_scheme", self.fd_scheme, FD_SCHEMES)
        check_number("DGRConfig", "dummies", self.dummies, kind=int, low=1)
        check_seed("DGRConfig", "dummy_seed", self.dummy_seed)
        check_number("DGRConfig", "eps", self.eps, low=0.0, low_open=True)
        if self.lam is not None:
            check_number("DGRConfig", "lam", self.lam, low=0.0)

    @property
    def strength(self) -> float:
        return DEFAULT_LAMBDA[self.penalty] if self.lam is None else float(self.lam)



# Per-dataset defaults for options left as None. UTKFace follows the paper (ResNet-50, batch 64,
# 100 epochs, step decay by 0.5 every third of training); its lr is the paper's 1e-5 when
# ImageNet weights are given (--pretrained-file) and 1e-3 from scratch, where 1e-5 barely moves.
# MultiDigits defaults fit the 5-minute demo on a 2-core CPU.
DATASET_DEFAULTS: dict[str, dict] = {
    "multidigits": dict(backbone="test_resnet", epochs=6, lr=2e-3, pretrained_lr=2e-3, lr_step=2),
    "utkface": dict(backbone="resnet50", epochs=100, lr=1e-3, pretrained_lr=1e-5, lr_step=None),
    # The scene datasets follow the Auto-lambda/DGR recipe: from scratch, SGD 0.1 with momentum,
    # weight decay 1e-4, cosine schedule, batch 4, 300 epochs (the DGR code's default).
    "nyuv2": dict(backbone="resnet50", epochs=300, lr=0.1, pretrained_lr=0.1, optimizer="sgd", schedule="cosine",
                  weight_decay=1e-4, batch_size=4),
    "cityscapes": dict(backbone="resnet50", epochs=300, lr=0.1, pretrained_lr=0.1, optimizer="sgd", schedule="cosine",
                       weight_decay=1e-4, batch_size=4),
    # ImageNet-style classification: the usual ResNet-50 recipe (SGD 0.1, weight decay 1e-4,
    # batch 256, 90 epochs), with a cosine schedule.
    "imagefolder": dict(backbone="resnet50", epochs=90, lr=0.1, pretrained_lr=0.01, optimizer="sgd", schedule="cosine",
                        weight_decay=1e-4, batch_size=256),
    # Scenes fits a few CPU minutes: a small backbone, narrow ASPP heads, Adam.
    "scenes": dict(backbone="test_resnet", epochs=8, lr=2e-3, pretrained_lr=2e-3, lr_step=None, batch_size=32,
                   aspp_width=32),
}


def recipe_batch_size(dataset: str) -> int:
    """The batch size a run of `dataset` takes when none is given."""
    return DATASET_DEFAULTS.get(dataset, {}).get("batch_size", 64)


def parse_rates(text: str) -> tuple[int, ...] | None:
    """`--aspp-rates`: "auto" (None: scaled to the feature map, `repeval.heads.aspp_rates`) or
    comma-separated positive ints.

    >>> parse_rates("12,24,36"), parse_rates("auto")
    ((12, 24, 36), None)
    """
    if text == "auto":
        return None
    try:
        rates = tuple(int(r) for r in str(text).split(","))
    except ValueError:
        rates = ()
    if not rates or min(rates) < 1 or max(rates) > MAX_ASPP_RATE:
        raise InvalidChoiceError(f"--aspp-rates must be 'auto' or comma-separated ints >= 1 and <= {MAX_ASPP_RATE}, "
                                 f"e.g. 12,24,36. Got {text!r} instead.")
    return rates


# Upper bounds of sizes, each far above any published recipe, so that a typo is refused at once
# instead of running for years or asking the kernel for terabytes: 300 epochs is the longest
# recipe (the scene tables); 256 ASPP channels the reference head; a dilation above 1,024 only
# samples the padding of any feature map an 8K image gives (a side of 8192 / 8).
MAX_EPOCHS = 100_000
MAX_ASPP_WIDTH = 4096
MAX_ASPP_RATE = 1024
MAX_HIDDEN = 65_536
MAX_BATCH = 65_536
MAX_WORKERS = 256


def check_options_apply(config: TrainConfig) -> None:
    """Refuse options a run would ignore: ASPP settings without a dense task, a logit ReLU
    without a classification task. Checked on the config as given (`resolved()` fills the ASPP
    width in for every run)."""
    from repeval.kinds import kind_of

    if config.head_relu:
        tasks = datasets.task_specs(config.dataset, config.tasks)
        if all(kind_of(t).dense for t in tasks):
            raise InvalidChoiceError(f"--head-relu sets the classification heads' logits; dataset {config.dataset!r} "
                                     f"has none ({', '.join(t.name for t in tasks)} are dense tasks): leave it out")
    if config.aspp_width is None and config.aspp_rates == "auto":
        return
    tasks = datasets.task_specs(config.dataset, config.tasks)
    if not any(kind_of(t).dense for t in tasks):
        given = "--aspp-width" if config.aspp_width is not None else "--aspp-rates"
        raise InvalidChoiceError(f"{given} sets the dense tasks' heads; dataset {config.dataset!r} has none "
                                 f"({', '.join(t.name for t in tasks)} are per-image tasks): leave it out")


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
    tasks: tuple[str, ...] | None = None
    arch: str = "split"
    arch_args: dict = field(default_factory=dict)
    backbone: str | None = None
    pretrained_file: str | None = None
    hidden: int = HEAD_HIDDEN
    head_relu: bool = False  # a ReLU on classification heads' logits (the authors' UTKFace heads)
    aspp_width: int | None = None
    aspp_rates: str = "auto"
    method: str = "ew"
    method_args: dict = field(default_factory=dict)
    dgr: DGRConfig | None = None
    lr: float | None = None
    weight_decay: float | None = None
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    schedule: str | None = None
    lr_step: int | None = None
    lr_gamma: float = 0.5
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    channels_last: bool | None = None  # None: on CUDA only
    num_workers: int | None = None  # None: auto (CUDA: min(8, cores), CPU: 0)
    data_on_device: bool = False  # hold the splits on the device (`repeval.datasets.device`)
    sync_bn: bool = False
    log_every: int = 20
    tensorboard: bool = False  # scalars to RUN/tb/ (`repeval.training.scalars`)
    out_dir: str = "runs"
    progress: bool = True

    def __post_init__(self) -> None:
        owner = "TrainConfig"
        for name in ("dataset_args", "method_args", "arch_args"):
            if not isinstance(getattr(self, name), dict):
                raise InvalidChoiceError(f"The {name!r} parameter of {owner} must be a dict. Got {getattr(self, name)!r} instead.")
        datasets.DATASETS.check(self.dataset)  # unknown names raise the registry's message
        from repeval.training.methods import METHODS, create_method  # names only; no torch yet

        METHODS.check(self.method)
        check_arch(self.arch, self.arch_args)
        check_choice(owner, "device", self.device, DEVICES)
        check_number(owner, "hidden", self.hidden, kind=int, low=1, high=MAX_HIDDEN)
        check_bool(owner, "head_relu", self.head_relu)
        # Batch norm in training mode needs two samples in every batch.
        if self.batch_size is not None:
            check_number(owner, "batch_size", self.batch_size, kind=int, low=2, high=MAX_BATCH)
        if self.weight_decay is not None:
            check_number(owner, "weight_decay", self.weight_decay, low=0.0)
        if self.optimizer is not None:
            check_choice(owner, "optimizer", self.optimizer, OPTIMIZERS)
        if self.schedule is not None:
            check_choice(owner, "schedule", self.schedule, SCHEDULES)
        if self.aspp_width is not None:
            check_number(owner, "aspp_width", self.aspp_width, kind=int, low=1, high=MAX_ASPP_WIDTH)
        parse_rates(self.aspp_rates)
        check_number(owner, "lr_gamma", self.lr_gamma, low=0.0, low_open=True)
        check_choice(owner, "precision", self.precision, PRECISIONS)
        if self.channels_last is not None:
            check_bool(owner, "channels_last", self.channels_last)
        check_bool(owner, "data_on_device", self.data_on_device)
        if self.num_workers is not None:
            check_number(owner, "num_workers", self.num_workers, kind=int, low=0, high=MAX_WORKERS)
        check_number(owner, "log_every", self.log_every, kind=int, low=1)
        check_bool(owner, "tensorboard", self.tensorboard)
        if self.tensorboard:
            from repeval.training.scalars import check_tensorboard

            check_tensorboard()
        check_seed(owner, "seed", self.seed)
        if self.lr is not None:
            check_number(owner, "lr", self.lr, low=0.0, low_open=True)
        if self.epochs is not None:
            check_number(owner, "epochs", self.epochs, kind=int, low=1, high=MAX_EPOCHS)
        if self.lr_step is not None:
            check_number(owner, "lr_step", self.lr_step, kind=int, low=0)
        if self.dgr is not None and not isinstance(self.dgr, DGRConfig):
            raise InvalidChoiceError(f"The 'dgr' parameter of {owner} must be a DGRConfig or None. Got {self.dgr!r} instead.")
        if "tasks" in self.dataset_args:
            raise InvalidChoiceError("choose tasks with TrainConfig.tasks (--tasks), not in dataset_args")
        if self.tasks is not None:
            datasets.check_task_selection(self.dataset, list(self.tasks))
        if self.dataset in datasets.NEEDS_DATA_DIR and "data_dir" in self.dataset_args:
            raise InvalidChoiceError("pass the data folder as TrainConfig.data_dir, not in dataset_args")
        if self.dataset not in datasets.NEEDS_DATA_DIR and self.data_dir is not None:
            raise InvalidChoiceError(f"dataset {self.dataset!r} is embedded and reads no --data-dir")
        datasets.check_args(self.dataset, self.dataset_kwargs())
        # Built once here (2 tasks stand in for the dataset's) so a bad option value fails now,
        # not when a sweep reaches this run. Last, with the dataset's check: they load torch.
        create_method(self.method, 2, **self.method_args)

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
            batch_size=self.batch_size or recipe_batch_size(self.dataset),
            weight_decay=d.get("weight_decay", 0.0) if self.weight_decay is None else self.weight_decay,
            optimizer=self.optimizer or d.get("optimizer", "adam"),
            schedule=self.schedule or d.get("schedule", "step"),
            aspp_width=self.aspp_width or d.get("aspp_width", ASPP_WIDTH),
        )

    def head_config(self):
        """The heads' shapes (`repeval.heads.HeadConfig`) of a resolved config."""
        from repeval.heads import HeadConfig

        return HeadConfig(hidden=self.hidden, width=self.aspp_width or ASPP_WIDTH, rates=parse_rates(self.aspp_rates),
                          logit_relu=self.head_relu)

    def dataset_kwargs(self) -> dict:
        kwargs = dict(self.dataset_args)
        if self.tasks is not None:
            kwargs["tasks"] = list(self.tasks)
        if self.dataset in datasets.NEEDS_DATA_DIR:
            kwargs["data_dir"] = self.data_dir
        return kwargs

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dgr"] = None if self.dgr is None else asdict(self.dgr)
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "TrainConfig", strict: bool = False) -> TrainConfig:
        """From `to_dict()`'s output (config.json, sweep files); types are checked, and unknown
        keys refused when `strict` (a stored config from a newer version keeps what it knows)."""
        return from_mapping(cls, d, where, ignore_unknown=not strict)
