"""Task specifications: what each prediction head predicts."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TaskSpec:
    """One classification task of a multi-task dataset.

    `ordinal` marks tasks whose classes are ordered (age bins, digit sums): plots use a
    sequential colour map for them.
    """

    name: str
    num_classes: int
    label_names: tuple[str, ...]
    ordinal: bool = False

    def __post_init__(self) -> None:
        if len(self.label_names) != self.num_classes:
            raise ValueError(
                f"task {self.name!r} has {self.num_classes} classes but "
                f"{len(self.label_names)} label names"
            )

    def to_dict(self) -> dict:
        d = asdict(self)
        d["label_names"] = list(self.label_names)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TaskSpec:
        return cls(
            name=d["name"],
            num_classes=int(d["num_classes"]),
            label_names=tuple(d["label_names"]),
            ordinal=bool(d.get("ordinal", False)),
        )
