"""`repeval probe` and `repeval tsne` as library calls: extract (cached), probe, write, plot."""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path

from rich.console import Console

from repeval import __version__
from repeval.probes.embeddings import EmbeddingSet, EncoderSource, extract
from repeval.probes.plots import plot_probe_bars
from repeval.probes.report import _unique_names, embedding_maps, summary_table, write_probe_results
from repeval.probes.suite import ProbeConfig, run_probes


def extract_all(sources: list[EncoderSource], device: str = "cpu", batch_size: int = 256,
                use_cache: bool = True, progress: bool = False) -> list[EmbeddingSet]:
    names = _unique_names([s.name for s in sources])
    return [extract(replace(s, name=n), device=device, batch_size=batch_size, use_cache=use_cache, progress=progress)
            for s, n in zip(sources, names)]


def probe(
    sources: list[EncoderSource],
    config: ProbeConfig,
    out_dir: str | os.PathLike,
    maps: tuple[str, ...] = (),
    max_points: int = 3000,
    device: str = "cpu",
    batch_size: int = 256,
    use_cache: bool = True,
    progress: bool = False,
    console: Console | None = None,
) -> list[dict]:
    """Probe every source; write probe.json/.csv, the bar chart and the requested 2-D maps."""
    out_dir = Path(out_dir)
    sets = extract_all(sources, device, batch_size, use_cache, progress)
    rows = run_probes(sets, config)
    provenance = {
        "command": "repeval probe",
        "config": asdict(config),
        "sources": [{"name": s.source.name, "key": s.source.key, "dataset": s.source.dataset,
                     "dataset_args": s.source.dataset_args, "origin": s.source.origin,
                     "embeddings_from_cache": s.from_cache} for s in sets],
        "repeval_version": __version__,
    }
    write_probe_results(rows, out_dir, provenance)
    plot_probe_bars(rows, out_dir / "probe_bars")
    for method in maps:
        embedding_maps(sets, out_dir, method=method, max_points=max_points, seed=config.seeds[0])
    if console is not None:
        console.print(summary_table(rows))
    return rows
