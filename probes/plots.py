"""2-D maps of embeddings (t-SNE, UMAP) and probe bar charts, as the paper's Figure 3.

Figure 3b layout: one row per task, one column per encoder, points coloured by class; ordinal
tasks (age bins, digit sums) use a sequential colour map with a colour bar, nominal tasks a
qualitative palette with a legend. Every figure is written as PNG and SVG, and the coordinates
it shows are saved beside it (`coords.npz`) for notebooks.
"""

from __future__ import annotations

import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import BoundaryNorm, ListedColormap  # noqa: E402

from repeval.errors import check_choice  # noqa: E402
from repeval.figures import save_figure  # noqa: E402
from repeval.probes.config import MAP_METHODS  # noqa: E402
from repeval.storage import atomic_write  # noqa: E402
from repeval.tasks import TaskSpec  # noqa: E402

METHODS = MAP_METHODS


BH_MAX_POINTS = 10_000


def embed_2d(features: np.ndarray, method: str = "tsne", seed: int = 0, n_jobs: int | None = None,
             perplexity: float = 30.0) -> np.ndarray:
    """2-D coordinates: openTSNE (PCA initialisation) or UMAP (cosine metric). t-SNE's repulsive
    gradients use Barnes-Hut below BH_MAX_POINTS points and FFT interpolation above, as openTSNE
    advises: on 2,000 points BH took 8.5 s where FFT took 18 s (2 cores)."""
    check_choice("embed_2d", "method", method, METHODS)
    n_jobs = n_jobs or os.cpu_count() or 1
    x = np.ascontiguousarray(features, dtype=np.float32)
    if method == "tsne":
        from openTSNE import TSNE

        tsne = TSNE(perplexity=min(perplexity, (len(x) - 1) / 3), initialization="pca",
                    negative_gradient_method="bh" if len(x) < BH_MAX_POINTS else "fft", n_jobs=n_jobs,
                    random_state=seed, verbose=False)
        return np.asarray(tsne.fit(x), dtype=np.float32)
    import umap

    reducer = umap.UMAP(n_neighbors=min(15, len(x) - 1), min_dist=0.1, metric="cosine", random_state=seed)
    return np.asarray(reducer.fit_transform(x), dtype=np.float32)


def _colours(task: TaskSpec):
    if task.ordinal:
        cmap = plt.get_cmap("viridis", task.num_classes)
        return cmap, BoundaryNorm(np.arange(task.num_classes + 1) - 0.5, task.num_classes)
    base = plt.get_cmap("tab10" if task.num_classes <= 10 else "tab20").colors
    cmap = ListedColormap([base[i % len(base)] for i in range(task.num_classes)])
    return cmap, BoundaryNorm(np.arange(task.num_classes + 1) - 0.5, task.num_classes)


def plot_embedding_grid(coords: dict[str, np.ndarray], labels: np.ndarray, tasks: tuple[TaskSpec, ...],
                        out_stem: str | os.PathLike, method: str = "tsne", seed: int = 0):
    """Rows = tasks, columns = encoders; writes `<stem>.png` and `<stem>.svg`; returns the figure."""
    names = list(coords)
    fig, axes = plt.subplots(len(tasks), len(names), figsize=(4 * len(names) + 1.5, 3.6 * len(tasks)),
                             squeeze=False, layout="constrained")
    order = np.random.default_rng(seed).permutation(len(labels))  # no class paints over the others
    for r, task in enumerate(tasks):
        cmap, norm = _colours(task)
        for c, name in enumerate(names):
            ax = axes[r, c]
            xy = coords[name][order]
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=labels[order, r], cmap=cmap, norm=norm, s=3, alpha=0.7,
                            rasterized=True, linewidths=0)
            ax.set_xticks([]), ax.set_yticks([])
            if r == 0:
                ax.set_title(name, fontsize=10)
            if c == 0:
                ax.set_ylabel(task.name)
        if task.ordinal:
            bar = fig.colorbar(sc, ax=axes[r, :].tolist(), fraction=0.03, pad=0.02,
                               ticks=np.linspace(0, task.num_classes - 1, min(task.num_classes, 8)).round())
            bar.set_label(task.name)
        else:
            handles = [plt.Line2D([], [], marker="o", ls="", color=cmap(i), label=task.label_names[i])
                       for i in range(task.num_classes)]
            axes[r, -1].legend(handles=handles, loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=7,
                               frameon=False, ncol=1 + task.num_classes // 12)
    fig.suptitle(f"{method.upper()} of the shared representation (test split)")
    save_figure(fig, out_stem)
    return fig


def plot_probe_bars(rows: list[dict], out_stem: str | os.PathLike, metric: str = "accuracy"):
    """Figure 3a: per task, `metric` of each classifier, encoders side by side, error bars = std
    over seeds."""
    values: dict = defaultdict(list)
    for row in rows:
        values[(row["task"], row["classifier"], row["checkpoint"])].append(row[metric])
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    classifiers = list(dict.fromkeys(r["classifier"] for r in rows))
    encoders = list(dict.fromkeys(r["checkpoint"] for r in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks) + 1, 3.4), squeeze=False)
    width = 0.8 / len(encoders)
    for ax, task in zip(axes[0], tasks):
        for i, enc in enumerate(encoders):
            means = [np.mean(values[(task, c, enc)]) for c in classifiers]
            stds = [np.std(values[(task, c, enc)]) for c in classifiers]
            ax.bar(np.arange(len(classifiers)) + (i - (len(encoders) - 1) / 2) * width, means, width,
                   yerr=stds, capsize=2, label=enc)
        ax.set_xticks(np.arange(len(classifiers)), classifiers)
        ax.set_title(task)
        ax.set_ylim(0, 1)
    axes[0, 0].set_ylabel(f"test {metric}")
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save_figure(fig, out_stem)
    return fig


def save_coords(path: str | os.PathLike, coords: dict[str, np.ndarray], labels: np.ndarray, indices: np.ndarray,
                tasks: tuple[TaskSpec, ...], method: str, seed: int) -> None:
    """`coords.npz`: one `[n, 2]` array per encoder (`coords/<name>`), the labels `[n, K]`, the
    sample indices, task names, the method and seed."""
    arrays = {f"coords/{name}": xy for name, xy in coords.items()}
    atomic_write(path, lambda f: np.savez(
        f, labels=labels, indices=indices, tasks=np.array([t.name for t in tasks]),
        encoders=np.array(list(coords)), method=np.array(method), seed=np.array(seed), **arrays))


def plot_matching(y: np.ndarray, log_probs: np.ndarray, sigma: np.ndarray, out_stem: str | os.PathLike):
    """Confusion of a random head's predictions against the true classes, before and after the
    class permutation `sigma` (true class c -> output unit sigma(c)) is applied.

    >>> import numpy as np
    >>> lp = np.log(np.full((4, 2), 0.5)); fig = plot_matching(np.array([0, 1, 0, 1]), lp,
    ...     np.array([1, 0]), "/tmp/matching")  # doctest: +SKIP
    """
    from sklearn.metrics import confusion_matrix

    n = log_probs.shape[1]
    pred = log_probs.argmax(1)
    inverse = np.argsort(sigma)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), layout="constrained")
    for ax, (title, p) in zip(axes, (("before matching", pred), ("after matching (sigma^-1 of the output)", inverse[pred]))):
        ax.imshow(confusion_matrix(y, p, labels=np.arange(n)), cmap="Blues")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
    save_figure(fig, out_stem)
    return fig


def plot_proxy_vs_gap(random_heads: list[dict], out_stem: str | os.PathLike, title: str = ""):
    """Theorem 1 check: each random head's gradient-norm proxy against its universality gap
    (`UniversalityMeasure.random_` rows).

    >>> m = UniversalityMeasure(n_random=10).fit(Z, y)  # doctest: +SKIP
    >>> fig = plot_proxy_vs_gap(m.random_, "runs/proxy_vs_gap")  # doctest: +SKIP
    """
    fig, ax = plt.subplots(figsize=(4.5, 3.6), layout="constrained")
    ax.scatter([h["proxy"] for h in random_heads], [h["gap"] for h in random_heads])
    ax.set_xlabel("proxy ||grad_theta sum L||_F")
    ax.set_ylabel("gap (matched random - optimal loss)")
    ax.set_title(title, fontsize=10)
    save_figure(fig, out_stem)
    return fig
