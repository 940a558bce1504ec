"""`make demo`: train vanilla and DGR encoders on the embedded MultiDigits data and compare them.

Sits at the top layer beside the CLI: it composes training (and, later, probing)."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from repeval import __version__
from repeval.storage import atomic_json, atomic_write
from repeval.training.config import TrainConfig
from repeval.training.dgr import DGRConfig
from repeval.training.loop import train
from repeval.training.run import read_metrics


def run_demo(out: Path, epochs: int | None = None, progress: bool = True, seed: int = 0) -> dict:
    """Train both encoders with the MultiDigits defaults; write `summary.json` and `summary.md`."""
    out = Path(out)
    base = TrainConfig(dataset="multidigits", epochs=epochs, seed=seed, out_dir=str(out), progress=progress)
    started = time.perf_counter()
    runs = {
        "vanilla": train(base),
        "dgr": train(replace(base, dgr=DGRConfig())),
    }
    finals = {name: read_metrics(path)[-1] for name, path in runs.items()}
    tasks = list(finals["vanilla"]["test_accuracy"])
    summary = {
        "repeval_version": __version__,
        "how": "repeval demo: two `repeval train multidigits` runs with the same seed, without and with --dgr",
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        "runs": {name: str(path) for name, path in runs.items()},
        "test_accuracy": {name: finals[name]["test_accuracy"] for name in runs},
    }
    atomic_json(summary, out / "summary.json")

    table = Table(title=f"MultiDigits test accuracy after {finals['vanilla']['epoch'] + 1} epochs")
    table.add_column("encoder")
    for t in tasks:
        table.add_column(t, justify="right")
    for name in runs:
        table.add_row(name, *(f"{finals[name]['test_accuracy'][t]:.4f}" for t in tasks))
    Console().print(table)

    lines = [
        "# repeval demo", "",
        f"{summary['how']} (seed {seed}, repeval {__version__}, {summary['seconds']} s).", "",
        "| encoder | " + " | ".join(tasks) + " | run |", "|---" * (len(tasks) + 2) + "|",
        *(f"| {name} | " + " | ".join(f"{finals[name]['test_accuracy'][t]:.4f}" for t in tasks)
          + f" | `{runs[name]}` |" for name in runs),
    ]
    atomic_write(out / "summary.md", lambda f: f.write(("\n".join(lines) + "\n").encode()))
    return summary
