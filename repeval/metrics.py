"""Multi-task metrics.

Delta_MTL (Maninis et al. 2019; the DGR paper's eq. 6): the mean relative improvement of a
multi-task model m over single-task baselines b, sign-flipped for lower-is-better metrics:
    (-1)^{l_j} (M_m,j - M_b,j) / M_b,j.
Public code averages it three ways; each is a named variant:
- "per-task" (default; DGR paper, Auto-lambda): one metric per task, mean over tasks;
- "all-metrics" (Nash-MTL, CAGrad): plain mean over every metric of every task;
- "task-then-metrics" (LibMTL): mean over each task's metrics, then over tasks.
repeval's Delta_MTL is positive when the multi-task model is better (the DGR and Auto-lambda
papers' sign). The Nash-MTL and CAGrad papers print Delta_m = -Delta_MTL, lower is better: a
value read from their tables compares with the negative of repeval's (`convention_note`).
"""

from __future__ import annotations

from repeval.errors import check_choice

DELTA_VARIANTS = ("per-task", "all-metrics", "task-then-metrics")

# Published single-task numbers, {task: {metric: value}} in repeval's task and metric names (raw
# units: depth abs error in metres, not x100), for Delta_MTL when no single-task runs are at hand.
PUBLISHED_BASES: dict[str, dict] = {
    # Auto-lambda's STL (its utils.py TaskMetric), which the DGR paper's Tables 2-3 use: SPLIT,
    # dilated ResNet-50 from scratch, 200 epochs. One metric per task: the "per-task" variant.
    "autolambda-nyuv2": {"seg": {"miou": 0.4337}, "depth": {"abs_err": 0.5224}, "normal": {"mean_angle": 22.40}},
    "autolambda-cityscapes": {"seg": {"miou": 0.5620}, "part_seg": {"miou": 0.5274}, "disp": {"abs_err": 0.84}},
    # SegNet STL of the Nash-MTL/CAGrad tables (their delta_fn BASE): every metric ("all-metrics").
    "segnet-nyuv2": {
        "seg": {"miou": 0.3830, "pixel_acc": 0.6376},
        "depth": {"abs_err": 0.6754, "rel_err": 0.2780},
        "normal": {"mean_angle": 25.01, "median_angle": 19.21, "within_11.25": 0.3014, "within_22.5": 0.5720,
                   "within_30": 0.6915},
    },
    "segnet-cityscapes7": {"seg": {"miou": 0.7401, "pixel_acc": 0.9316}, "depth": {"abs_err": 0.0125, "rel_err": 27.77}},
}


DELTA_HEADER = "Δ_MTL (%, + = better)"
# Bases whose papers print Delta_m = -Delta_MTL (lower is better).
NEGATED_IN_PAPERS = {"segnet-nyuv2": "Nash-MTL/CAGrad", "segnet-cityscapes7": "Nash-MTL/CAGrad"}


def convention_note(variant: str, baseline: str | None) -> str | None:
    """A sentence for a report whose Delta_MTL sits beside numbers printed with the other sign.

    >>> convention_note("all-metrics", "segnet-nyuv2")[:60]
    'Sign: the Nash-MTL/CAGrad papers print Δm = −Δ_MTL (lower is'
    >>> convention_note("per-task", "autolambda-nyuv2") is None
    True
    """
    papers = NEGATED_IN_PAPERS.get(baseline or "")
    if papers is None:
        return None
    return (f"Sign: the {papers} papers print Δm = −Δ_MTL (lower is better); here + is better, so compare this "
            f"table's Δ_MTL ({variant}) with the negative of their printed Δm.")


def delta_mtl(
    multi: dict[str, dict[str, float]],
    single: dict[str, dict[str, float]],
    lower_is_better: set[str] | frozenset[str] = frozenset(),
    variant: str = "per-task",
    primary: dict[str, str] | None = None,
) -> float:
    """Delta_MTL as a fraction (0.0266 = +2.66%).

    `multi` and `single` map task -> {metric: value}; `lower_is_better` names the metrics to
    sign-flip; `primary` picks each task's metric for "per-task" (default: its first metric).

    >>> single = {"age": {"acc": 0.5233}, "gender": {"acc": 0.8964}, "race": {"acc": 0.7728}}
    >>> vanilla = {"age": {"acc": 0.5391}, "gender": {"acc": 0.9153}, "race": {"acc": 0.7948}}
    >>> round(100 * delta_mtl(vanilla, single), 2)  # the paper's Table 1, Vanilla row
    2.66
    """
    check_choice("delta_mtl", "variant", variant, DELTA_VARIANTS)
    missing = set(single) - set(multi)
    if missing:
        raise ValueError(f"the multi-task results lack task(s) {sorted(missing)} of the single-task baseline")

    def gain(task: str, metric: str) -> float:
        base = single[task][metric]
        if base == 0:
            raise ZeroDivisionError(f"single-task {task}/{metric} is 0: relative improvement is undefined")
        sign = -1.0 if metric in lower_is_better else 1.0
        return sign * (multi[task][metric] - base) / base

    tasks = list(single)
    if variant == "per-task":
        chosen = {t: (primary or {}).get(t, next(iter(single[t]))) for t in tasks}
        return sum(gain(t, chosen[t]) for t in tasks) / len(tasks)
    if variant == "all-metrics":
        gains = [gain(t, m) for t in tasks for m in single[t]]
        return sum(gains) / len(gains)
    return sum(sum(gain(t, m) for m in single[t]) / len(single[t]) for t in tasks) / len(tasks)
