"""Putting a committed epoch back into a live run (`--resume`): the model's weights, the
optimiser, schedule and method states, and every rank's RNG. What the files hold and how they are
read and checked is `repeval.training.run`'s business; here they meet the objects they restore."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from repeval.distributed import restore_rng, world_size
from repeval.errors import CheckpointError
from repeval.training import run as run_files

if TYPE_CHECKING:
    from repeval.training.loop import Training

log = logging.getLogger("repeval")


def restore(training: Training, ckpt: dict, state: dict, run_dir: Path) -> None:
    """The committed epoch's weights, optimiser, schedule, method and RNG states, or one line
    saying that they do not fit the run's config (a damaged or foreign file)."""
    try:
        training.model.load_state_dict(model_state(ckpt), strict=True)
        training.optimizer.load_state_dict(state["optimizer"])
        training.scheduler.load_state_dict(state["scheduler"])
        training.method.load_state_dict(state["method"])
        restore_rng_states(state, run_dir)
    except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as e:
        detail = " ".join(str(e).strip().splitlines()[:2])[:300] or type(e).__name__
        raise CheckpointError(f"cannot resume {str(run_dir)!r}: its saved state does not fit its config ({detail})") from None


def model_state(ckpt: dict) -> dict:
    """A checkpoint's encoder, heads and dummy heads as one `MultiTaskModel` state dict."""
    state = {f"encoder.{k}": v for k, v in ckpt["encoder"].items()}
    for group in ("heads", "dummy_heads"):
        for task, sd in ckpt[group].items():
            state.update({f"{group}.{task}.{k}": v for k, v in sd.items()})
    return state


def restore_rng_states(state: dict, run_dir: Path) -> None:
    """Each rank's saved RNG; a run resumed on another number of processes gets rank 0's, and a notice."""
    ranks = state.get("rng_ranks")
    if ranks is not None and len(ranks) == world_size():
        restore_rng(ranks)
        return
    torch.set_rng_state(state["rng"])
    if world_size() > 1 or (ranks is not None and len(ranks) > 1):
        log.warning("%s was trained by %d process(es) and resumes on %d: the data order and augmentation "
                    "from here differ from an uninterrupted run", run_dir, run_files.stored_world_size(run_dir), world_size())
