"""Frozen-encoder embeddings: extracted once in a fixed order, cached on disk by content.

An `EncoderSource` says which encoder and which data: a repeval checkpoint (its stored dataset
and split; `data_dir` may override the folder only) or any timm model on any registered dataset.
`extract` returns train and test `Embeddings` (features, labels, sample indices) and caches them
under `~/.cache/repeval/embeddings/`, keyed by the checkpoint's content hash (or the timm name and
weights file hash), the dataset arguments and the input settings: a second run does no forward
pass, and a changed checkpoint gets new embeddings.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from repeval import __version__, datasets
from repeval.checkpoint import EXECUTION_FIELDS, content_hash, load_checkpoint, model_from_checkpoint
from repeval.datasets import InputNormalizer, InputSpec, collate_batch
from repeval.distributed import batch_shard, gather_rows
from repeval.errors import InvalidChoiceError
from repeval.kinds import kind_of
from repeval.models import build_encoder, check_backbone, to_channels_last
from repeval.probes.config import EXTRACT_BATCH
from repeval.storage import atomic_write, cache_dir
from repeval.tasks import TaskSpec

log = logging.getLogger("repeval")

EXTRACTOR_VERSION = 1  # bump when extraction changes what it produces
SPLITS = ("train", "test")


@dataclass(frozen=True)
class EncoderSource:
    """An encoder and the data to embed. `key` identifies the encoder's weights by content."""

    name: str
    key: str
    dataset: str
    dataset_args: dict
    build_encoder: Callable[[InputSpec], nn.Module] = field(compare=False, repr=False)
    origin: dict = field(default_factory=dict)

    def cache_key(self, input_spec: InputSpec) -> str:
        blob = json.dumps(
            [EXTRACTOR_VERSION, self.key, self.dataset, self.dataset_args, input_spec.to_dict()],
            sort_keys=True, default=str,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


@dataclass
class Embeddings:
    """Features `[N, D]` (float32), labels `[N, K]` and source sample indices `[N]` of one split."""

    features: np.ndarray
    labels: np.ndarray
    indices: np.ndarray


@dataclass
class EmbeddingSet:
    source: EncoderSource
    tasks: tuple[TaskSpec, ...]
    train: Embeddings
    test: Embeddings
    from_cache: bool = False

    def split(self, name: str) -> Embeddings:
        return {"train": self.train, "test": self.test}[name]

    @classmethod
    def from_arrays(cls, name: str, train_x, train_y, test_x, test_y, tasks: tuple[TaskSpec, ...] | None = None) -> EmbeddingSet:
        """Wrap any embeddings (`[N, D]`) and labels (`[N]` or `[N, K]`) for the probes and plots.

        >>> import numpy as np
        >>> s = EmbeddingSet.from_arrays("pixels", np.zeros((4, 3)), [0, 1, 0, 1], np.zeros((2, 3)), [1, 0])
        >>> s.tasks[0].name, s.tasks[0].num_classes
        ('task0', 2)
        """
        train_y = np.asarray(train_y).reshape(len(train_x), -1)
        test_y = np.asarray(test_y).reshape(len(test_x), -1)
        if tasks is None:
            counts = [int(max(train_y[:, k].max(), test_y[:, k].max())) + 1 for k in range(train_y.shape[1])]
            tasks = tuple(TaskSpec(f"task{k}", c, tuple(map(str, range(c)))) for k, c in enumerate(counts))
        source = EncoderSource(name, f"arrays:{name}", "arrays", {}, build_encoder=lambda _: None)
        return cls(source, tuple(tasks),
                   Embeddings(np.asarray(train_x, dtype=np.float32), train_y, np.arange(len(train_x))),
                   Embeddings(np.asarray(test_x, dtype=np.float32), test_y, np.arange(len(test_x))))


def source_from_checkpoint(path: str | os.PathLike, data_dir: str | None = None) -> EncoderSource:
    """The encoder and data split of a repeval checkpoint; `data_dir` overrides the folder only.

    >>> source = source_from_checkpoint("runs/x/checkpoint.pt")  # doctest: +SKIP
    >>> source.name, source.dataset  # doctest: +SKIP
    ('x', 'multidigits')
    """
    ckpt = load_checkpoint(path)
    if ckpt["model"].get("dense"):
        tasks = ", ".join(f"{t['name']} ({t['kind']})" for t in ckpt["tasks"])
        raise InvalidChoiceError(
            f"checkpoint {str(path)!r} has dense tasks ({tasks}): per-image embeddings (t-SNE/UMAP maps, the "
            "dt/svm/knn probes) do not apply; `repeval probe` runs the per-pixel linear probe on it")
    model = model_from_checkpoint(ckpt, path)  # weights that do not fit are refused before any data is read
    args = dict(ckpt["dataset"]["args"])
    if data_dir is not None:
        if "data_dir" not in args:
            raise InvalidChoiceError(f"checkpoint {str(path)!r} was trained on the embedded dataset "
                                     f"{ckpt['dataset']['name']!r}, which reads no --data-dir")
        args["data_dir"] = str(data_dir)
    return EncoderSource(
        name=Path(path).parent.name if Path(path).name == "checkpoint.pt" else Path(path).stem,
        key=content_hash(path),
        dataset=ckpt["dataset"]["name"],
        dataset_args=args,
        build_encoder=lambda _input, model=model: model.probe_encoder(),
        origin={"checkpoint": str(Path(path).resolve()), "backbone": ckpt["model"]["backbone"],
                "dgr": (ckpt.get("train_config") or {}).get("dgr"), **training_seed_group(ckpt.get("train_config") or {})},
    )




def training_seed_group(train_config: dict) -> dict:
    """`training_seed` and `configuration` (a short label plus a hash of everything but the seed)
    of a checkpoint's training config: checkpoints with the same `configuration` differ only
    in their training seed."""
    if not train_config:
        return {}
    # Runs differing only in how they were executed, and in the seed, are one configuration.
    rest = {k: v for k, v in train_config.items() if k not in (*EXECUTION_FIELDS, "seed")}
    digest = hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:8]
    dgr = train_config.get("dgr")
    label = f"{train_config.get('method', '?')}" + (f"+dgr-{dgr.get('lam'):g}" if dgr and dgr.get("lam") is not None else
                                                   "+dgr" if dgr else "")
    return {"training_seed": train_config.get("seed"), "configuration": f"{label} [{digest}]"}


def source_from_timm(
    name: str,
    dataset: str,
    pretrained_file: str | os.PathLike | None = None,
    dataset_args: dict | None = None,
) -> EncoderSource:
    """Any timm model (random init, or weights from a local file) on a registered dataset.

    >>> source = source_from_timm("resnet50", "utkface", "r50.pth", {"data_dir": "~/UTKFace"})  # doctest: +SKIP
    """
    datasets.DATASETS.check(dataset)
    dataset_args = dict(dataset_args or {})
    if dataset not in datasets.NEEDS_DATA_DIR and "data_dir" in dataset_args:
        raise InvalidChoiceError(f"dataset {dataset!r} is embedded and reads no --data-dir")
    datasets.check_args(dataset, dataset_args)
    dense = [t.name for t in datasets.task_specs(dataset) if not kind_of(t).per_image_labels]
    if dense:
        raise InvalidChoiceError(f"--timm measures per-image embeddings; dataset {dataset!r} has dense tasks "
                                 f"({', '.join(dense)}): train a repeval encoder on it, and `repeval probe` its checkpoint")
    check_backbone(name)
    weights = None if pretrained_file is None else content_hash(pretrained_file)
    return EncoderSource(
        name=name,
        key=f"timm:{name}:{weights or 'random-init-seed-0'}",
        dataset=dataset,
        dataset_args=dict(dataset_args or {}),
        build_encoder=lambda spec: _seeded(lambda: build_encoder(name, spec.channels, pretrained_file)),
        origin={"timm": name, "pretrained_file": None if pretrained_file is None else str(pretrained_file)},
    )


def _seeded(make: Callable[[], nn.Module]) -> nn.Module:
    # A randomly initialised timm model must be the same model every time it is probed.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return make()


@torch.inference_mode()
def embed(
    encoder: nn.Module,
    dataset: datasets.ArrayDataset,
    input_spec: InputSpec,
    device: torch.device,
    batch_size: int = EXTRACT_BATCH,
    progress: bool = False,
    desc: str = "embedding",
) -> np.ndarray:
    """Features of every sample of `dataset`, in dataset order, from a frozen encoder."""
    encoder.eval().requires_grad_(False).to(device)
    if device.type == "cuda":
        to_channels_last(encoder)
    # Under torchrun each rank embeds every R-th batch; the rows are gathered back in order.
    mine = batch_shard(len(dataset), batch_size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=mine, collate_fn=collate_batch,
                        pin_memory=device.type == "cuda")
    normalize = InputNormalizer(input_spec, device)
    out = torch.empty((len(mine), encoder.num_features), dtype=torch.float32, device=device)
    start = 0
    with tqdm(total=len(mine), unit="img", desc=desc, disable=not progress, leave=False) as bar:
        for images, _ in loader:
            x = normalize(images.to(device, non_blocking=True))
            if device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    z = encoder(x)
            else:
                z = encoder(x)
            out[start : start + len(images)] = z.float()
            start += len(images)
            bar.update(len(images))
    return gather_rows(out, len(dataset), batch_size).cpu().numpy()


def extract(
    source: EncoderSource,
    device: torch.device | str = "cpu",
    batch_size: int = EXTRACT_BATCH,
    use_cache: bool = True,
    progress: bool = False,
) -> EmbeddingSet:
    """Train and test embeddings of `source`, from the cache when it has them.

    >>> emb = extract(source_from_checkpoint("runs/x/checkpoint.pt"))  # doctest: +SKIP
    >>> emb.train.features.shape, emb.train.labels.shape, emb.from_cache  # doctest: +SKIP
    ((10000, 96), (10000, 3), False)
    """
    device = torch.device(device)
    bundle = datasets.build(source.dataset, **source.dataset_args)
    key = source.cache_key(bundle.input)
    path = cache_dir("embeddings") / f"{key}.npz"
    if use_cache and path.exists():
        splits, problem = _read_cache(path, key, bundle)
        if splits is not None:
            return EmbeddingSet(source, bundle.tasks, splits["train"], splits["test"], from_cache=True)
        log.warning("embedding cache %s is not valid (%s); extracting again", path, problem)

    encoder = source.build_encoder(bundle.input)
    splits = {}
    for name in SPLITS:
        data = getattr(bundle, name)
        features = embed(encoder, data, bundle.input, device, batch_size, progress, desc=f"{source.name} {name}")
        splits[name] = Embeddings(features, data.labels.copy(), np.asarray(data.indices).copy())
    arrays = {f"{s}_{k}": getattr(e, k) for s, e in splits.items() for k in ("features", "labels", "indices")}
    meta = json.dumps({"repeval_version": __version__, "source": source.origin, "key": source.key, "cache_key": key,
                       "dataset": source.dataset, "dataset_args": source.dataset_args,
                       "sha256": {name: _array_sha256(a) for name, a in arrays.items()}}, default=str)
    atomic_write(path, lambda f: np.savez(f, meta=np.array(meta), **arrays))
    return EmbeddingSet(source, bundle.tasks, splits["train"], splits["test"], from_cache=False)


def _array_sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _read_cache(path: Path, key: str, bundle) -> tuple[dict | None, str]:
    """The cached splits if the file is readable, was made for `key`, holds every array with its
    recorded SHA-256, and its labels and sample indices are the dataset's; else (None, why)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {name: data[name] for name in data.files if name != "meta"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        return None, f"{type(e).__name__}: {e}"
    if meta.get("cache_key") != key:
        return None, "it was made for another encoder or dataset"
    expected = {f"{s}_{k}" for s in SPLITS for k in ("features", "labels", "indices")}
    if set(arrays) != expected or any(_array_sha256(a) != meta.get("sha256", {}).get(n) for n, a in arrays.items()):
        return None, "its arrays do not match their recorded SHA-256"
    splits = {}
    for split in SPLITS:
        data = getattr(bundle, split)
        features, labels, indices = (arrays[f"{split}_{k}"] for k in ("features", "labels", "indices"))
        if (features.ndim != 2 or len(features) != len(data) or not np.array_equal(labels, data.labels)
                or not np.array_equal(indices, np.asarray(data.indices))):
            return None, f"its {split} split does not match the dataset's"
        splits[split] = Embeddings(features, labels, indices)
    return splits, ""
