"""Crash-safe writes, folder locks, output-folder checks and the on-disk cache location.

Every file repeval writes goes to a temporary name in the same folder, is fsynced and renamed
into place (and the folder fsynced), so a crash or kill leaves either the old file or the new
one, never half of one. Files that must change together (a run's epoch) are *staged* under
names of their own and published by `training.run`'s commit record.

Each step of a write is reported to an optional observer (`observe_file_events`): the fault
injection tests kill a real training process right after each one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from repeval.errors import FolderInUseError, InvalidChoiceError

log = logging.getLogger("repeval")

TMP_SUFFIX = ".tmp"
LOCK_NAME = ".lock"

_observer: Callable[[str, Path], None] | None = None


@contextlib.contextmanager
def observe_file_events(observer: Callable[[str, Path], None]) -> Iterator[None]:
    """Call `observer(event, path)` after each file event ('create', 'write', 'fsync',
    'rename', 'fsync-dir', 'remove') of repeval's writes, while the context is open."""
    global _observer
    previous, _observer = _observer, observer
    try:
        yield
    finally:
        _observer = previous


def _event(kind: str, path: Path) -> None:
    if _observer is not None:
        _observer(kind, path)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make renames in `folder` durable (a power cut after rename could otherwise undo it)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    _event("fsync-dir", Path(folder))


def write_synced(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write `path` in place and fsync it: for staged files that a commit record publishes."""
    path = Path(path)
    with open(path, "wb") as f:
        _event("create", path)
        write(f)
        f.flush()
        _event("write", path)
        os.fsync(f.fileno())
    _event("fsync", path)
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        write_synced(tmp, write)
        os.replace(tmp, path)
        _event("rename", path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def publish(staged: Path, path: Path) -> None:
    """Rename a staged, fsynced file into place."""
    os.replace(staged, path)
    _event("rename", path)


def atomic_torch_save(obj: object, path: str | os.PathLike) -> Path:
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_json(obj: object, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))


def remove_stale_temporaries(folder: Path) -> list[str]:
    """Delete the temporaries of killed writes (`.NAME.PID.tmp`); call only under the folder's lock."""
    removed = []
    for path in folder.glob(f".*{TMP_SUFFIX}"):
        path.unlink(missing_ok=True)
        _event("remove", path)
        removed.append(path.name)
    return removed


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, read in blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_dir(*parts: str) -> Path:
    """`$REPEVAL_CACHE_DIR` (default `~/.cache/repeval`) joined with `parts`, created."""
    root = Path(os.environ.get("REPEVAL_CACHE_DIR", Path.home() / ".cache" / "repeval"))
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_output_dir(path: str | os.PathLike, option: str = "--out") -> None:
    """Refuse, before anything is written, an output folder that is a file, lies under a file,
    or cannot be created or written (read-only folder or file system).

    >>> check_output_dir("/proc/sys/repeval-runs")  # doctest: +SKIP
    Traceback (most recent call last):
    repeval.errors.InvalidChoiceError: --out '/proc/sys/repeval-runs' cannot be written: '/proc/sys' is read-only ...
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise InvalidChoiceError(f"{option} {str(path)!r} is a file, not a folder; give a folder")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise InvalidChoiceError(f"{option} {str(path)!r} cannot be created: {str(existing)!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InvalidChoiceError(
            f"{option} {str(path)!r} cannot be written: {str(existing)!r} is read-only for this user; "
            "give a writable folder"
        )


# Locks held by this process, by lock-file path: a sweep holds a run's lock and calls `train`,
# which takes it again. flock locks belong to an open file, so a second open would block itself.
_held: dict[Path, list] = {}


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str = "folder") -> Iterator[None]:
    """Hold `<folder>/.lock` for the duration: a second process gets `FolderInUseError`.

    The lock is an flock on the file, which the kernel drops when its owner dies, so a stale
    lock (owner killed) is taken over at once; the file names the owner (pid, host, start) for
    the message, and a takeover is logged. Re-entrant within one process.
    """
    import fcntl

    path = (Path(folder) / LOCK_NAME).resolve()
    if path in _held:
        _held[path][1] += 1
        try:
            yield
        finally:
            _held[path][1] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            raise FolderInUseError(
                f"{what} {str(Path(folder))!r} is in use by pid {owner.get('pid', '?')} on host "
                f"{owner.get('host', '?')} (since {owner.get('since', '?')}); wait for it or stop it"
            ) from None
        previous = _read_owner(fd)
        if previous.get("pid") is not None:
            log.warning("%s %s: taking over the lock of pid %s on host %s, which is gone",
                        what, Path(folder), previous["pid"], previous.get("host", "?"))
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        _held[path] = [fd, 1]
        try:
            yield
        finally:
            del _held[path]
            os.ftruncate(fd, 0)  # an empty lock file marks a clean release
    finally:
        os.close(fd)  # closing drops the flock


def _read_owner(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
