"""`repeval probe` and `repeval tsne` as library calls: extract (cached), probe, write, plot."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rich.console import Console

from repeval import __version__
from repeval.distributed import init_from_env, is_main_process
from repeval.probes.across_seeds import across_training_seeds, seeds_table
from repeval.probes.config import EXTRACT_BATCH, MAP_MAX_POINTS
from repeval.probes.embeddings import EmbeddingSet, EncoderSource, extract
from repeval.probes.plots import plot_probe_bars
from repeval.probes.report import embedding_maps, summary_table, unique_names, write_probe_results
from repeval.probes.suite import ProbeConfig, run_probes
from repeval.probes.universality_report import (
    UniversalityConfig, measure_universality, universality_table, write_universality,
)
from repeval.probes.universality_report import provenance as universality_provenance


def extract_all(sources: list[EncoderSource], device: str = "cpu", batch_size: int = EXTRACT_BATCH,
                use_cache: bool = True, progress: bool = False) -> list[EmbeddingSet]:
    """`extract` for several sources; duplicate names get a suffix so results stay apart.

    >>> sets = extract_all([source_from_checkpoint(p) for p in ("a.pt", "b.pt")])  # doctest: +SKIP
    """
    init_from_env(device)  # under torchrun every rank embeds its share of each split
    names = unique_names([s.name for s in sources])
    return [extract(replace(s, name=n), device=device, batch_size=batch_size, use_cache=use_cache, progress=progress)
            for s, n in zip(sources, names)]


@dataclass
class ProbeResults:
    """Rows of `probe.json`, and of `universality.json` when universality was measured."""

    rows: list[dict]
    universality: list[dict] | None = None


def probe(
    sources: list[EncoderSource],
    config: ProbeConfig,
    out_dir: str | os.PathLike,
    maps: tuple[str, ...] = (),
    max_points: int = MAP_MAX_POINTS,
    universality: UniversalityConfig | None = None,
    device: str = "cpu",
    batch_size: int = EXTRACT_BATCH,
    use_cache: bool = True,
    progress: bool = False,
    console: Console | None = None,
) -> ProbeResults:
    """Probe every source; write probe.json/.csv, the bar chart, the requested 2-D maps and,
    with `universality`, universality.json/.csv.

    Under torchrun the ranks share the extraction; rank 0 alone fits and writes (the others
    return no rows).

    >>> results = probe([source_from_checkpoint("runs/demo/a/checkpoint.pt")],
    ...                 ProbeConfig(classifiers=("knn",)), "runs/probe-a")  # doctest: +SKIP
    """
    out_dir = Path(out_dir)
    sets = extract_all(sources, device, batch_size, use_cache, progress)
    if not is_main_process():
        return ProbeResults([])
    rows = run_probes(sets, config)
    provenance = {
        "command": "repeval probe",
        "config": asdict(config),
        "sources": [{"name": s.source.name, "key": s.source.key, "dataset": s.source.dataset,
                     "dataset_args": s.source.dataset_args, "origin": s.source.origin,
                     "embeddings_from_cache": s.from_cache} for s in sets],
        "repeval_version": __version__,
    }
    seeds = across_training_seeds(rows, sets, "accuracy", ("task", "classifier"))
    provenance["across_training_seeds"] = seeds
    write_probe_results(rows, out_dir, provenance)
    plot_probe_bars(rows, out_dir / "probe_bars")
    for method in maps:
        embedding_maps(sets, out_dir, method=method, max_points=max_points, seed=config.seeds[0])
    if console is not None:
        console.print(summary_table(rows))
        if seeds:
            console.print(seeds_table(seeds, ("task", "classifier"), scale=100.0))
    measured = universality_of(sets, universality, out_dir, console) if universality is not None else None
    return ProbeResults(rows, measured)


def universality_of(sets: list[EmbeddingSet], config: UniversalityConfig, out_dir: str | os.PathLike,
                    console: Console | None = None) -> list[dict]:
    """Measure universality of every (encoder, task); write universality.json / .csv (rank 0
    alone under torchrun)."""
    if not is_main_process():
        return []
    rows = measure_universality(sets, config)
    provenance = universality_provenance(sets, config)
    provenance["across_training_seeds"] = seeds = [
        e for value in ("gap_mean", "test_gap_mean") for e in across_training_seeds(rows, sets, value, ("task",))]
    write_universality(rows, out_dir, provenance)
    if console is not None:
        console.print(universality_table(rows))
        for value in ("gap_mean", "test_gap_mean"):
            if any(e["value"] == value for e in seeds):
                console.print(seeds_table([e for e in seeds if e["value"] == value], ("task",)))
    return rows
