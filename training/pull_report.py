"""DGR's pull over training in a report: for each DGR row, the seed-mean of each epoch's mean
total pull ||lambda dP/dz|| / ||sum_k g_k|| (`repeval.training.diagnostics`), drawn as
`dgr_pull.png/.svg`, and one sentence naming the rows where it exceeded 1 for most of training
(DGR then pulled z harder than the tasks). Runs made before the pull was recorded are skipped."""

from __future__ import annotations

import math
import os
from statistics import fmean

from repeval.training import run as run_files


def pull_histories(rows) -> dict[str, list[tuple[int, float]]]:
    """Row label -> [(epoch, seed-mean total pull)], for rows whose runs recorded it."""
    out = {}
    for row in rows:
        by_epoch: dict[int, list[float]] = {}
        for run in row.runs:
            for line in run_files.read_metrics(run.path):
                value = (line.get("dgr_pull") or {}).get("total")
                if value is not None and math.isfinite(value):
                    by_epoch.setdefault(int(line["epoch"]), []).append(value)
        if by_epoch:
            out[row.label] = [(e, fmean(v)) for e, v in sorted(by_epoch.items())]
    return out


def dominated(histories: dict[str, list[tuple[int, float]]]) -> list[str]:
    """Rows whose pull exceeded 1 in more than half of their epochs."""
    return [label for label, points in histories.items() if sum(v > 1 for _, v in points) > len(points) / 2]


def pull_sentence(histories: dict[str, list[tuple[int, float]]]) -> str | None:
    """
    >>> pull_sentence({"ew + DGR (λ=1)": [(0, 3.0), (1, 2.0), (2, 0.5)], "ew + DGR (λ=0.1)": [(0, 0.3)]})
    "DGR's pull exceeded 1 for most of training in ew + DGR (λ=1): DGR dominated the tasks' gradient at z there."
    """
    rows = dominated(histories)
    if not rows:
        return None
    return f"DGR's pull exceeded 1 for most of training in {', '.join(rows)}: DGR dominated the tasks' gradient at z there."


def plot_dgr_pull(histories: dict[str, list[tuple[int, float]]], out_stem: str | os.PathLike) -> None:
    from repeval.figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4), layout="constrained")
    for label, points in histories.items():
        ax.plot([e + 1 for e, _ in points], [v for _, v in points], marker="o", ms=3, label=label)
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("DGR's pull ‖λ∂P/∂z‖ / ‖Σ g_k‖")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22))  # below: row labels are long
    save_figure(fig, out_stem)
