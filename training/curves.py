"""Training curves of runs, drawn from their `metrics.jsonl` lines."""

from __future__ import annotations

import os

from repeval.figures import pyplot, save_figure


def plot_training_curves(histories: dict[str, list[dict]], out_stem: str | os.PathLike):
    """Per task: training loss (dashed) and the task's first test metric (solid; accuracy for
    classification, mIoU, abs error, mean angle for dense kinds) by epoch, one colour per run.

    `histories` maps a run name to its `metrics.jsonl` lines (dicts with `epoch`, `train_loss`
    and `test` per task, as `training.run.read_metrics` returns them).

    >>> h = {"a": [{"epoch": 0, "train_loss": {"t": 1.0}, "test": {"t": {"accuracy": 0.5}}},
    ...            {"epoch": 1, "train_loss": {"t": 0.5}, "test": {"t": {"accuracy": 0.8}}}]}
    >>> fig = plot_training_curves(h, "runs/curves")  # doctest: +SKIP
    """
    plt = pyplot()
    from repeval.training.run import with_test_metrics

    histories = {name: [with_test_metrics(m) for m in lines] for name, lines in histories.items()}
    first = next(iter(histories.values()))[0]["test"]
    tasks = list(first)
    metric = {task: next(iter(first[task])) for task in tasks}
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 3.2), squeeze=False, layout="constrained")
    colours = plt.get_cmap("tab10").colors
    for ax, task in zip(axes[0], tasks):
        loss_ax = ax.twinx()
        for i, (name, lines) in enumerate(histories.items()):
            epochs = [m["epoch"] + 1 for m in lines]
            ax.plot(epochs, [m["test"][task][metric[task]] for m in lines], color=colours[i], marker="o", ms=3,
                    label=f"{name} test {metric[task]}")
            loss_ax.plot(epochs, [m["train_loss"][task] for m in lines], color=colours[i], ls="--", alpha=0.6, label=f"{name} train loss")
        ax.set_title(task)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"test {metric[task]}")
        loss_ax.set_ylabel("train loss")
    axes[0, -1].legend(fontsize=7, loc="center right")
    save_figure(fig, out_stem)
    return fig
