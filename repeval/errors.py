"""User-facing errors. The CLI prints their message on one line and exits with code 2."""

from __future__ import annotations

import math
from collections.abc import Iterable

SEED_LIMIT = 2**32  # numpy's seeds and torch's CUDA seeds are 32-bit; one range for every seed


class RepevalError(Exception):
    """Base class for errors caused by the user's input, not by a bug."""


class InvalidChoiceError(RepevalError, ValueError):
    """A value is not among the allowed ones."""


class DataNotFoundError(RepevalError, FileNotFoundError):
    """A dataset folder or file is missing."""


class CheckpointError(RepevalError, ValueError):
    """A file is not a repeval checkpoint, or of an unknown format version, or damaged."""


class DataError(RepevalError, ValueError):
    """A dataset file cannot be read, or does not hold what its format declares."""


class NonFiniteLossError(RepevalError, FloatingPointError):
    """Training produced a NaN or infinite loss or weights (the CLI exits with code 1)."""


class FolderInUseError(RepevalError):
    """Another live process holds the folder's lock."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says where the run stopped and how to resume it."""


def one_line(error: BaseException) -> str:
    """The message of a user error on one line. An error raised in a DataLoader worker comes
    back wrapped in the worker's traceback ("Caught DataError in DataLoader worker process 0...");
    its own message is the traceback's last line.

    >>> one_line(DataError("Caught DataError in DataLoader worker process 0.\\nOriginal Traceback (most recent "
    ...                    "call last):\\n  ...\\nrepeval.errors.DataError: 'x.npy': truncated\\n"))
    "'x.npy': truncated"
    """
    message = str(error)
    if "\nOriginal Traceback" in message:
        message = message.rstrip().splitlines()[-1].split(": ", 1)[-1]
    return " ".join(message.split("\n"))


def check_choice(owner: str, param: str, value: object, allowed: Iterable[object]) -> None:
    """Raise `InvalidChoiceError` unless `value` is one of `allowed`.

    >>> check_choice("DGRConfig", "penalty", "norm", ["norm", "squared"])
    """
    allowed = list(allowed)
    if value not in allowed:
        options = ", ".join(repr(a) for a in allowed)
        raise InvalidChoiceError(
            f"The {param!r} parameter of {owner} must be one of {options}. Got {value!r} instead."
        )


def check_number(
    owner: str,
    param: str,
    value: object,
    *,
    kind: type = float,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
) -> None:
    """Raise `InvalidChoiceError` unless `value` is a finite `kind` within [low, high] (or (low, high]).

    >>> check_number("TrainConfig", "lr", float("inf"), low=0.0, low_open=True)
    Traceback (most recent call last):
    ...
    repeval.errors.InvalidChoiceError: The 'lr' parameter of TrainConfig must be a finite float > 0.0. Got inf instead.
    """
    ok_type = isinstance(value, kind) and not isinstance(value, bool)
    if kind is float:
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok_type
    if ok and low is not None:
        ok = value > low if low_open else value >= low  # type: ignore[operator]
    if ok and high is not None:
        ok = value <= high  # type: ignore[operator]
    if not ok:
        name = "an int" if kind is int else "a finite float"
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low}")
        if high is not None:
            bounds.append(f"<= {high}")
        raise InvalidChoiceError(
            f"The {param!r} parameter of {owner} must be {name}"
            f"{' ' + ' and '.join(bounds) if bounds else ''}. Got {value!r} instead."
        )


def check_seed(owner: str, param: str, value: object) -> None:
    """Seeds are ints in [0, 2**32): what numpy, torch and CUDA all accept."""
    check_number(owner, param, value, kind=int, low=0, high=SEED_LIMIT - 1)


def check_bool(owner: str, param: str, value: object) -> None:
    """
    >>> check_bool("NYUv2", "augment", "yes")
    Traceback (most recent call last):
    ...
    repeval.errors.InvalidChoiceError: The 'augment' parameter of NYUv2 must be a bool. Got 'yes' instead.
    """
    if not isinstance(value, bool):
        raise InvalidChoiceError(f"The {param!r} parameter of {owner} must be a bool. Got {value!r} instead.")


def check_fixed_split(dataset: str, split_seed: object) -> None:
    """Datasets whose train/val split is their folders take only split seed 0."""
    check_seed(dataset, "split_seed", split_seed)
    if split_seed != 0:
        raise InvalidChoiceError(f"{dataset} has a fixed train/val split; --split-seed must be 0. Got {split_seed!r} instead.")

