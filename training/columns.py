"""The columns of a results table: one test metric of one task each. A classification task's
accuracy column is named after the task ("age"); other metrics are "task metric" ("depth
abs_err"). Directions and display scales come from the task kinds (`repeval.kinds.metric_info`)."""

from __future__ import annotations

from repeval.metrics import delta_mtl


def column_name(task: str, metric: str) -> str:
    """A classification task's accuracy column is the task's name; other metrics are "task metric"."""
    return task if metric == "accuracy" else f"{task} {metric}"


def split_column(column: str) -> tuple[str, str]:
    task, _, metric = column.partition(" ")
    return task, metric or "accuracy"


def higher_is_better(column: str) -> bool:
    from repeval.kinds import metric_info

    return metric_info(split_column(column)[1])[0] == "higher"


def column_scale(column: str) -> float:
    from repeval.kinds import metric_info

    return 100.0 if metric_info(split_column(column)[1])[1] else 1.0


def column_header(column: str) -> str:
    task, metric = split_column(column)
    unit = " (%)" if column_scale(column) == 100 else ""
    return f"{task} acc{unit}" if metric == "accuracy" else f"{task} {metric}{unit}"


def delta_or_none(multi: dict, single: dict, lower: set[str], variant: str) -> float | None:
    """Delta_MTL, or None (a blank cell) where a baseline value of 0 leaves it undefined."""
    try:
        return delta_mtl(multi, single, lower_is_better=lower, variant=variant)
    except ZeroDivisionError:
        return None


def nested(means: dict[str, float]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for column, value in means.items():
        task, metric = split_column(column)
        out.setdefault(task, {})[metric] = value
    return out


def best_on_test(epochs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Each metric's best value over the epochs, by its direction.

    >>> best_on_test([{"depth": {"abs_err": 0.3}}, {"depth": {"abs_err": 0.2}}, {"depth": {"abs_err": 0.25}}])
    {'depth': {'abs_err': 0.2}}
    """
    pick = {task: {m: (max if higher_is_better(column_name(task, m)) else min) for m in values}
            for task, values in epochs[-1].items()}
    return {task: {m: pick[task][m](e[task][m] for e in epochs) for m in values} for task, values in epochs[-1].items()}
