"""Task specifications: what each prediction head predicts, and of which kind it is.

A spec is plain data (torch-free; it lives in checkpoints and dataset modules). What a kind
*does* (its head, loss, metrics) is in `repeval.kinds`, found by `spec.kind`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TaskSpec:
    """One task of a multi-task dataset.

    `num_classes` is the number of outputs of the task's head: classes for classification and
    segmentation, channels for regression kinds (1 for depth, 3 for normals). `label_names`
    name the classes (empty for regression kinds). `ordinal` marks tasks whose classes are
    ordered (age bins, digit sums): plots use a sequential colour map for them. `options` are
    the kind's protocol options as `(name, value)` pairs, e.g. `(("loss", "l1"),)` for normals.

    >>> TaskSpec("depth", 1, kind="depth").to_dict()["kind"]
    'depth'
    """

    name: str
    num_classes: int
    label_names: tuple[str, ...] = ()
    ordinal: bool = False
    kind: str = "classification"
    options: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.label_names and len(self.label_names) != self.num_classes:
            raise ValueError(
                f"task {self.name!r} has {self.num_classes} classes but "
                f"{len(self.label_names)} label names"
            )

    def option(self, name: str, default: Any = None) -> Any:
        return dict(self.options).get(name, default)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "num_classes": self.num_classes, "label_names": list(self.label_names),
            "ordinal": self.ordinal, "kind": self.kind, "options": dict(self.options),
        }

    @classmethod
    def from_dict(cls, d: dict) -> TaskSpec:
        """Reads format-1 checkpoints too: they hold classification tasks without `kind`."""
        return cls(
            name=d["name"],
            num_classes=int(d["num_classes"]),
            label_names=tuple(d.get("label_names", ())),
            ordinal=bool(d.get("ordinal", False)),
            kind=str(d.get("kind", "classification")),
            options=tuple(sorted(dict(d.get("options", {})).items())),
        )
