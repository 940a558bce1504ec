"""Array-backed multi-task datasets, and what a model needs to know about their inputs."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from repeval.tasks import TaskSpec


@dataclass(frozen=True)
class InputSpec:
    """Shape and normalisation of a dataset's images; stored in every checkpoint."""

    channels: int
    height: int
    width: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> InputSpec:
        return cls(
            channels=int(d["channels"]),
            height=int(d["height"]),
            width=int(d["width"]),
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
        )


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ArrayDataset(torch.utils.data.Dataset):
    """Images as uint8 `[N, C, H, W]` (in memory or memory-mapped) with `[N, K]` int labels.

    Samples stay uint8 until they reach the device, where `InputNormalizer` turns them into
    floats: four times less to copy, and one vectorised op instead of a per-image transform.
    `__getitems__` lets the DataLoader fetch a whole batch with one fancy index.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        indices: np.ndarray | None = None,
        rows: np.ndarray | None = None,
        extras: dict[str, np.ndarray] | None = None,
    ):
        self.rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 [N, C, H, W]; got {images.dtype} {images.shape}")
        if labels.ndim != 2 or len(labels) != len(self.rows):
            raise ValueError(f"labels must be [N, K] with N={len(self.rows)}; got {labels.shape}")
        self.images = images  # backing array; sample i is images[rows[i]]
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        # `indices` identify samples in their source (file order, composition order) for probes.
        self.indices = np.arange(len(self.rows)) if indices is None else np.asarray(indices)
        # Per-sample provenance a dataset wants to expose (e.g. MultiDigits' source digits).
        self.extras = dict(extras or {})

    def __len__(self) -> int:
        return len(self.rows)

    def select_tasks(self, keep: list[int]) -> ArrayDataset:
        """The same samples with the labels of tasks `keep` only."""
        return ArrayDataset(self.images, self.labels[:, keep], self.indices, self.rows, self.extras)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(np.array(self.images[self.rows[i]])), torch.from_numpy(self.labels[i])

    def __getitems__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # Sorted reads are much faster on a memory map; un-sort after to keep the sampler's order.
        idx = np.asarray(idx)
        rows = self.rows[idx]
        order = np.argsort(rows, kind="stable")
        images = np.empty((len(idx), *self.images.shape[1:]), dtype=np.uint8)
        images[order] = self.images[rows[order]]
        return torch.from_numpy(images), torch.from_numpy(self.labels[idx])


def collate_batch(batch):
    """Collate for `ArrayDataset`: batches already arrive whole from `__getitems__`."""
    if isinstance(batch, tuple):
        return batch
    return torch.utils.data.default_collate(batch)


class InputNormalizer:
    """uint8 `[B, C, H, W]` -> float32 normalised with the spec's mean and std.

    Mean and std live on the device from construction, so normalising a batch in the training
    step copies nothing from the host but the batch itself.
    """

    def __init__(self, spec: InputSpec, device: torch.device | str = "cpu"):
        self.mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float().div_(255.0) - self.mean) / self.std


def normalize_batch(images: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    """One-off `InputNormalizer(spec, images.device)(images)`, for notebooks and tests."""
    return InputNormalizer(spec, images.device)(images)


@dataclass
class DatasetBundle:
    """What `datasets.build` returns: the splits, the tasks and how to read the inputs.

    `args` are the keyword arguments that rebuild exactly this bundle (split seed included);
    `report` says what was skipped while loading and why.
    """

    name: str
    args: dict
    train: ArrayDataset
    test: ArrayDataset
    tasks: tuple[TaskSpec, ...]
    input: InputSpec
    report: dict = field(default_factory=dict)


def select_tasks(bundle: DatasetBundle, names: list[str] | tuple[str, ...]) -> DatasetBundle:
    """`bundle` with only the tasks `names`, in the dataset's order (its args record them, so a
    checkpoint's dataset rebuilds the same selection)."""
    all_names = [t.name for t in bundle.tasks]
    keep = [all_names.index(n) for n in all_names if n in set(names)]
    return replace(bundle, train=bundle.train.select_tasks(keep), test=bundle.test.select_tasks(keep),
                   tasks=tuple(bundle.tasks[k] for k in keep), args={**bundle.args, "tasks": [all_names[k] for k in keep]})
