"""One run over several processes (torchrun), with each method's mathematics equal to one process
on the global batch, and probe extraction sharded over them. Without torch.distributed initialised every function here is a no-op, and
this is rank 0 of 1.

repeval does not wrap the model in DistributedDataParallel: DDP averages gradients through hooks
that `torch.autograd.grad` never fires, and most methods need the task gradients before they are
combined. The model stays unwrapped and the few places that need the global batch all-reduce
explicitly (`average_`, SUM then divide: gloo has no AVG):

- every method: the gradients of all trained parameters, averaged at the end of its backward
  (`average_gradients`), as DDP would;
- gradient methods: each task's gradient of the shared parameters, averaged *before* the method
  combines them (never combined per rank); with `--rep-grad`, the Gram matrix of the
  representation gradients, summed (samples are disjoint across ranks);
- GradNorm: the squared norms of the task gradients at z, summed;
- Auto-lambda: the virtual step's gradients, the meta gradient and the perturbed losses;
- DGR: each dummy head's gradient, averaged before its norm is taken, so the penalty is the norm
  over the global batch (not a mean of per-rank norms); each rank then pushes its share of the
  penalty's gradient through its own z;
- epoch loss statistics (DWA's weights), test metrics (additive states, summed) and the
  non-finite check (a NaN on any rank stops every rank).
Everything random that must agree (initialisation, dummy heads, PCGrad's order) comes from the
same seeds on every rank; data order and augmentation differ per rank."""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler, RandomSampler, Sampler


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init_from_env(device: str = "auto") -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1 in the environment): nccl on
    CUDA, gloo on CPU; each process takes the GPU of its local rank. Returns whether this is a
    distributed run. A second call is a no-op."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        cuda = device != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def average_(tensors: Iterable[torch.Tensor | None]) -> None:
    """All-reduce-mean in place over ranks, in one flat buffer per dtype (a generator is not
    even iterated in one process: nothing is added to the single-process step)."""
    if world_size() == 1:
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        if t is not None:
            by_dtype.setdefault(t.dtype, []).append(t)
    for group in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in group])
        dist.all_reduce(flat)
        flat /= world_size()
        offset = 0
        for t in group:
            t.copy_(flat[offset: offset + t.numel()].view_as(t))
            offset += t.numel()


def sum_(tensor: torch.Tensor) -> torch.Tensor:
    """All-reduce-sum in place; returns the tensor."""
    if world_size() > 1:
        dist.all_reduce(tensor)
    return tensor


def maximum_(tensor: torch.Tensor) -> torch.Tensor:
    if world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def average_gradients(params: Iterable[torch.Tensor]) -> None:
    """The gradients of `params` averaged over ranks (every rank holds the same set)."""
    average_(p.grad for p in params)


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def epoch_sampler(dataset: Dataset, seed: int, epoch: int) -> Sampler:
    """The shuffle of one epoch, a function of (seed, epoch) only: a resumed run sees the same
    order as an uninterrupted one. Under torchrun each rank takes its share of the same shuffle."""
    if world_size() > 1:
        sampler = DistributedSampler(dataset, shuffle=True, seed=seed)
        sampler.set_epoch(epoch)
        return sampler
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return RandomSampler(dataset, generator=generator)


def shard(n: int) -> range:
    """This rank's share of n test samples (no padding: metrics are summed, not averaged)."""
    return range(rank(), n, world_size())


def rng_states() -> list[dict]:
    """Every rank's RNG states (torch, and CUDA where used), gathered in rank order: a resumed
    run gives each rank back its own."""
    own = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        own["cuda"] = torch.cuda.get_rng_state()
    if world_size() == 1:
        return [own]
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, own)
    return gathered


def restore_rng(states: list[dict]) -> None:
    own = states[rank()]
    torch.set_rng_state(own["torch"])
    if "cuda" in own and torch.cuda.is_available():
        torch.cuda.set_rng_state(own["cuda"])


def batch_shard(n: int, batch_size: int, of_rank: int | None = None) -> list[int]:
    """The samples of every R-th batch of `batch_size` (batches as one process would form them),
    starting at this rank's (or `of_rank`'s): each sample is computed in the same batch as in one
    process, so the results are the same bit for bit."""
    r = rank() if of_rank is None else of_rank
    batches = range(r, -(-n // batch_size), world_size())
    return [i for b in batches for i in range(b * batch_size, min(n, (b + 1) * batch_size))]


def gather_rows(local: torch.Tensor, n: int, batch_size: int) -> torch.Tensor:
    """The rows each rank computed for its `batch_shard`, put back in order: `[n, ...]` on every rank."""
    if world_size() == 1:
        return local
    shares = [batch_shard(n, batch_size, r) for r in range(world_size())]
    padded = local.new_zeros((max(len(s) for s in shares), *local.shape[1:]))
    padded[: len(local)] = local
    gathered = [torch.empty_like(padded) for _ in range(world_size())]
    dist.all_gather(gathered, padded)
    out = local.new_empty((n, *local.shape[1:]))
    for share, rows in zip(shares, gathered):
        out[share] = rows[: len(share)]
    return out
