"""`--data-on-device`: a split held whole on the training device, for datasets that fit there
(NYUv2's 795 training images, Cityscapes' 2,975 at 128x256, the embedded ones). Samples are
read and checked once; uint8 images and compact targets (class ids as int16) stay on the device,
and each batch is gathered and augmented there (the recipe's scale, crop and flip, through the
same `augment` as the loader path). The loader then costs nothing.

Batches are the DataLoader's, bit for bit on a CPU: the same sampler order, the same random
draws in the same sequence (a DataLoader iterator first draws its workers' base seed, so this
one draws it too), the same dtypes. A run with and without `--data-on-device` trains the same."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from repeval.datasets.base import ArrayDataset
from repeval.datasets.dense import DenseDataset, augment
from repeval.errors import InvalidChoiceError


def bytes_on_device(dataset) -> int:
    """What `DeviceSplit(dataset)` will hold, from sample 0 (every sample has its shape)."""
    if isinstance(dataset, ArrayDataset):
        return len(dataset) * (int(np.prod(dataset.image_shape)) + dataset.labels.shape[1] * 8)
    if not isinstance(dataset, DenseDataset):
        raise InvalidChoiceError(f"--data-on-device holds array and dense datasets; {type(dataset).__name__} decodes "
                                 "its files per sample (ImageNet's size does not fit a device): leave it out")
    image, targets = dataset.load(0)
    per_sample = image.nbytes + sum(t.size * (2 if k.target_is_index else t.itemsize) for t, k in zip(targets, dataset.kinds))
    return len(dataset) * per_sample


class DeviceSplit:
    """A split on `device`. `batch(indices)` returns what the dataset's `__getitems__` would."""

    def __init__(self, dataset, device: torch.device):
        self.dense = isinstance(dataset, DenseDataset)
        bytes_on_device(dataset)  # refuses what cannot be held
        if not self.dense:
            images, labels = dataset.__getitems__(list(range(len(dataset))))
            self.images, self.labels = images.to(device), labels.to(device)
            return
        samples = [dataset.load(i) for i in range(len(dataset))]  # each checked once, as the loader would
        self.kinds, self.augmentation, self.keep = dataset.kinds, dataset.augmentation, dataset.keep
        self.images = torch.from_numpy(np.stack([image for image, _ in samples])).to(device)
        self.dtypes = [torch.from_numpy(t).dtype for t in samples[0][1]]
        self.targets = [torch.from_numpy(np.stack([s[1][k] for s in samples])).to(torch.int16 if kind.target_is_index else None)
                        .to(device) for k, kind in enumerate(self.kinds)]

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: list[int]):
        if not self.dense:
            index = torch.as_tensor(indices, device=self.images.device)
            return self.images[index], self.labels[index]
        items = []
        for i in indices:
            image, targets = self.images[i], [t[i].to(dtype) for t, dtype in zip(self.targets, self.dtypes)]
            if self.augmentation is not None:
                image, targets = augment(image, targets, self.kinds, self.augmentation)
            items.append((image, targets if self.keep is None else [targets[k] for k in self.keep]))
        return torch.stack([image for image, _ in items]), [torch.stack(ts) for ts in zip(*(t for _, t in items))]


class DeviceLoader:
    """Batches of a `DeviceSplit` in `sampler`'s order, as `DataLoader(batch_size, drop_last)` gives them."""

    def __init__(self, split: DeviceSplit, sampler, batch_size: int, drop_last: bool):
        self.split, self.sampler, self.batch_size, self.drop_last = split, sampler, batch_size, drop_last

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator:
        # The draw a DataLoader iterator makes when it is created (its workers' base seed): made
        # here too, and as early, so the augmentation draws that follow are the loader's.
        torch.empty((), dtype=torch.int64).random_()
        return self._batches([int(i) for i in self.sampler])

    def _batches(self, order: list[int]) -> Iterator:
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            if self.drop_last and len(chunk) < self.batch_size:
                return
            yield self.split.batch(chunk)
