"""Typed configs from untyped input (sweep files, `config.json`, command-line lists).

Config dataclasses declare their fields' types; `from_mapping` refuses unknown keys and values of
the wrong type with the one-line message the CLI prints, and each dataclass's `__post_init__`
checks its values' ranges. Nothing here imports torch: the CLI validates before loading it.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from repeval.errors import InvalidChoiceError, check_seed

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    origin = typing.get_origin(tp)
    if origin is not None:
        return origin.__name__
    return getattr(tp, "__name__", str(tp))


def _convert(tp: Any, value: Any, where: str) -> tuple[bool, Any]:
    """(matches, value converted): nested dataclasses are built from mappings, lists become tuples."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            ok, converted = _convert(arm, value, where)
            if ok:
                return True, converted
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is Any:
        return True, value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return True, value
        return (True, from_mapping(tp, value, where)) if isinstance(value, Mapping) else (False, value)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), value
    if tp is str:
        return isinstance(value, str), value
    if origin is tuple or tp is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            items = [_convert(args[0], v, where) for v in value]
            return all(ok for ok, _ in items), tuple(v for _, v in items)
        return True, tuple(value)
    if origin is list or tp is list:
        return isinstance(value, (list, tuple)), list(value) if isinstance(value, (list, tuple)) else value
    if origin is dict or tp is dict:
        return isinstance(value, Mapping), dict(value) if isinstance(value, Mapping) else value
    return isinstance(value, tp), value


def from_mapping(cls: type[T], data: object, where: str | None = None, ignore_unknown: bool = False) -> T:
    """Build the dataclass `cls` from a mapping, checking keys and value types.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Opts:
    ...     epochs: int = 1
    >>> from_mapping(Opts, {"epochs": 3})
    Opts(epochs=3)
    >>> from_mapping(Opts, {"epoch": 3}, "[train]")
    Traceback (most recent call last):
    ...
    repeval.errors.InvalidChoiceError: unknown [train] key(s) ['epoch']; allowed: epochs
    """
    where = where or cls.__name__
    if not isinstance(data, Mapping):
        raise InvalidChoiceError(f"{where} must be a table of options; got {type(data).__name__} {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown and not ignore_unknown:
        raise InvalidChoiceError(f"unknown {where} key(s) {unknown}; allowed: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            continue
        ok, converted = _convert(hints[key], value, f"{where}.{key}")
        if not ok:
            raise InvalidChoiceError(
                f"The {key!r} parameter of {where} must be {_type_name(hints[key])}. Got {value!r} instead."
            )
        kwargs[key] = converted
    return cls(**kwargs)


def _parse_list(text: str, option: str, convert, what: str) -> tuple:
    items = [s.strip() for s in text.split(",")]
    if not text.strip() or any(not s for s in items):
        raise InvalidChoiceError(f"{option} must be a comma list of {what} with no empty item; got {text!r}")
    try:
        return tuple(convert(s) for s in items)
    except ValueError:
        raise InvalidChoiceError(f"{option} must be a comma list of {what}; got {text!r}") from None


def parse_int_list(text: str, option: str) -> tuple[int, ...]:
    """`"0,1,2"` -> (0, 1, 2); empty items and non-integers are errors, not skipped.

    >>> parse_int_list("0, 1,2", "--seeds")
    (0, 1, 2)
    """
    return _parse_list(text, option, int, "integers")


def parse_float_list(text: str, option: str) -> tuple[float, ...]:
    """`"1e-2,1e-3"` -> (0.01, 0.001); empty items and non-numbers are errors.

    >>> parse_float_list("1e-2, 0.1", "--l2-grid")
    (0.01, 0.1)
    """
    return _parse_list(text, option, float, "numbers")


def parse_seeds(text: str, option: str = "--seeds") -> tuple[int, ...]:
    seeds = parse_int_list(text, option)
    for seed in seeds:
        check_seed(option, "seed", seed)
    return seeds


def parse_workers(text: str, option: str = "--num-workers") -> int | None:
    """`--num-workers`: "auto" (None) or an int >= 0.

    >>> parse_workers("auto"), parse_workers("4")
    (None, 4)
    """
    if text == "auto":
        return None
    try:
        return int(text)
    except ValueError:
        raise InvalidChoiceError(f"{option} must be 'auto' or an int >= 0. Got {text!r} instead.") from None


def check_options(kind: str, name: str, options: Mapping[str, Any], defaults: Mapping[str, Any],
                  free: tuple[str, ...] = ()) -> None:
    """A registry entry's options (a method's, a dataset's) against its factory's keyword defaults:
    unknown names, values not of the default's type (str where the default is None), non-finite
    floats. Names in `free` are checked by the factory itself.

    >>> check_options("method", "sam", {"rho": "big"}, {"rho": 0.05})
    Traceback (most recent call last):
    ...
    repeval.errors.InvalidChoiceError: The 'rho' option of method 'sam' must be a float. Got 'big' instead.
    """
    for key, value in options.items():
        if key not in defaults:
            raise InvalidChoiceError(
                f"{kind} {name!r} has no option {key!r}; its options are: {', '.join(defaults) or 'none'}")
        if key in free:
            continue
        expected = str if defaults[key] is None else type(defaults[key])
        if expected is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        else:
            ok = isinstance(value, expected) and not (isinstance(value, bool) and expected is not bool)
        if not ok:
            article = "an" if expected is int else "a"
            raise InvalidChoiceError(
                f"The {key!r} option of {kind} {name!r} must be {article} {expected.__name__}. Got {value!r} instead.")
        if expected is float and not math.isfinite(value):
            raise InvalidChoiceError(f"The {key!r} option of {kind} {name!r} must be finite. Got {value!r} instead.")
