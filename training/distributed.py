"""Rank awareness, so the loop runs unchanged under torchrun (a later issue wraps the model
in DistributedDataParallel). Without torch.distributed initialised, this is rank 0 of 1."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, RandomSampler, Sampler


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return rank() == 0


def epoch_sampler(dataset: Dataset, seed: int, epoch: int) -> Sampler:
    """The shuffle of one epoch, a function of (seed, epoch) only: a resumed run sees the same
    order as an uninterrupted one."""
    if world_size() > 1:
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return sampler
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return RandomSampler(dataset, generator=generator)
