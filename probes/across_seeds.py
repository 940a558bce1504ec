"""Results of several checkpoints of one configuration, summarised over their training seeds
(mean, sample std, 95 % t-interval, n): the spread that says whether two configurations differ.
Checkpoints are grouped by `origin["configuration"]` (`embeddings.training_seed_group`)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from rich.table import Table

from repeval.probes.embeddings import EmbeddingSet
from repeval.stats import SeedSummary, seed_summary


def across_training_seeds(rows: list[dict], sets: list[EmbeddingSet], value: str, by: tuple[str, ...]) -> list[dict]:
    """One entry per (configuration, *by) with at least two training seeds: the summary of
    `value`, first averaged per checkpoint (over probe seeds, where there are several)."""
    origin = {s.source.name: s.source.origin for s in sets}
    per_checkpoint: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        o = origin.get(row["checkpoint"], {})
        if o.get("configuration") is None or row.get(value) is None:
            continue
        per_checkpoint[(o["configuration"], *(row[k] for k in by))][row["checkpoint"]].append(float(row[value]))
    out = []
    for key, checkpoints in per_checkpoint.items():
        seeds = {origin[c]["training_seed"] for c in checkpoints}
        if len(checkpoints) < 2 or len(seeds) < len(checkpoints):
            continue
        summary = seed_summary([float(np.mean(v)) for v in checkpoints.values()])
        out.append({"configuration": key[0], **dict(zip(by, key[1:])), "value": value, **summary.to_dict(),
                    "training_seeds": sorted(seeds), "checkpoints": sorted(checkpoints)})
    return out


def seeds_table(entries: list[dict], by: tuple[str, ...], scale: float = 1.0) -> Table:
    table = Table(title=f"{entries[0]['value']} over training seeds: mean ± sample std [95 % t-interval]")
    for column in ("configuration", *by, "n", "summary"):
        table.add_column(column, justify="right" if column in ("n", "summary") else "left", overflow="fold")
    for e in entries:
        table.add_row(e["configuration"], *(str(e[k]) for k in by), str(e["n"]),
                      SeedSummary(**{k: e[k] for k in ("n", "mean", "std", "ci_low", "ci_high")}).text(scale))
    return table
