"""Probe outputs: `probe.json` / `probe.csv` with provenance, the terminal table, and the
side-by-side 2-D maps of several encoders."""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np
from rich.table import Table

from repeval import __version__
from repeval.errors import InvalidChoiceError
from repeval.probes.config import MAP_MAX_POINTS
from repeval.probes.embeddings import EmbeddingSet
from repeval.probes.plots import embed_2d, plot_embedding_grid, save_coords
from repeval.storage import atomic_json, atomic_write

CSV_FIELDS = ["checkpoint", "checkpoint_hash", "dataset", "split", "task", "classifier", "params", "tuned", "seed",
              "accuracy", "balanced_accuracy", "macro_f1", "fit_seconds", "predict_seconds", "repeval_version"]


def write_probe_results(rows: list[dict], out_dir: str | os.PathLike, provenance: dict) -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    json_path = atomic_json({"repeval_version": __version__, "provenance": provenance, "rows": rows}, out_dir / "probe.json")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "tuned": json.dumps(row.get("tuned", {}))})
    csv_path = atomic_write(out_dir / "probe.csv", lambda f: f.write(buffer.getvalue().encode()))
    return json_path, csv_path


def mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f}" + (f" ± {np.std(values):.4f}" if len(values) > 1 else "")


def summary_table(rows: list[dict], metric: str = "accuracy") -> Table:
    """Rows: encoder x task; columns: classifiers; cells: mean ± std over *probe* seeds (the
    classifiers' own randomness; deterministic probes show no spread). The spread over training
    seeds is `across_seeds.across_training_seeds`.

    >>> from rich.console import Console
    >>> Console().print(summary_table(rows))  # doctest: +SKIP
    """
    cells: dict = defaultdict(list)
    for row in rows:
        cells[(row["checkpoint"], row["task"], row["classifier"])].append(row[metric])
    classifiers = list(dict.fromkeys(r["classifier"] for r in rows))
    table = Table(title=f"test {metric} of probes on frozen embeddings (± std over probe seeds, not training seeds)")
    table.add_column("encoder", overflow="fold")
    table.add_column("task")
    for c in classifiers:
        table.add_column(c, justify="right")
    for enc, task in dict.fromkeys((r["checkpoint"], r["task"]) for r in rows):
        table.add_row(enc, task, *(mean_std(cells[(enc, task, c)]) for c in classifiers))
    return table


def embedding_maps(sets: list[EmbeddingSet], out_dir: str | os.PathLike, method: str = "tsne",
                   max_points: int = MAP_MAX_POINTS, seed: int = 0, n_jobs: int | None = None) -> dict[str, np.ndarray]:
    """2-D maps of the same test samples for every encoder; writes `<method>.png/.svg` and
    `coords.npz` (or `coords-umap.npz`) into `out_dir` and returns the coordinates.

    >>> coords = embedding_maps([vanilla_set, dgr_set], "runs/maps", method="tsne")  # doctest: +SKIP
    >>> coords["vanilla"].shape  # doctest: +SKIP
    (2000, 2)
    """
    first = sets[0]
    for other in sets[1:]:
        if not np.array_equal(other.test.indices, first.test.indices) or other.tasks != first.tasks:
            raise InvalidChoiceError(
                f"cannot map {other.source.name!r} beside {first.source.name!r}: they were evaluated on "
                "different test samples or tasks (dataset or split differ)")
    rng = np.random.default_rng(seed)
    n = len(first.test.indices)
    pick = np.sort(rng.choice(n, size=min(max_points, n), replace=False))
    names = unique_names([s.source.name for s in sets])
    coords = {name: embed_2d(s.test.features[pick], method=method, seed=seed, n_jobs=n_jobs) for name, s in zip(names, sets)}
    out_dir = Path(out_dir)
    plot_embedding_grid(coords, first.test.labels[pick], first.tasks, out_dir / method, method=method, seed=seed)
    save_coords(out_dir / ("coords.npz" if method == "tsne" else f"coords-{method}.npz"), coords,
                first.test.labels[pick], first.test.indices[pick], first.tasks, method, seed)
    return coords


def unique_names(names: list[str]) -> list[str]:
    """Suffix repeated names: ["a", "a"] -> ["a", "a (2)"]."""
    seen: dict = defaultdict(int)
    out = []
    for name in names:
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out
