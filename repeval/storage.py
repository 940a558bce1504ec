"""Crash-safe writes and the on-disk cache location.

Every file repeval writes goes to a temporary name in the same folder and is renamed into
place, so a crash or kill leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO

import torch


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_torch_save(obj: object, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_json(obj: object, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def cache_dir(*parts: str) -> Path:
    """`$REPEVAL_CACHE_DIR` (default `~/.cache/repeval`) joined with `parts`, created."""
    root = Path(os.environ.get("REPEVAL_CACHE_DIR", Path.home() / ".cache" / "repeval"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
