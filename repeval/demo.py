"""`make demo`: train vanilla and DGR encoders on the embedded MultiDigits data, probe both
frozen encoders and draw their t-SNE maps side by side.

Sits at the top layer beside the CLI: it composes training and probing."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console
from rich.table import Table

from repeval import __version__
from repeval.probes.embeddings import source_from_checkpoint
from repeval.probes.report import mean_std
from repeval.probes.suite import ProbeConfig
from repeval.probes.workflow import probe
from repeval.storage import atomic_json, atomic_write
from repeval.training.config import TrainConfig
from repeval.training.dgr import DGRConfig
from repeval.training.loop import train
from repeval.training.run import read_metrics


PROBE_CLASSIFIERS = ("dt", "svm", "knn")
PROBE_SEEDS = (0, 1, 2)


def run_demo(out: Path, epochs: int | None = None, progress: bool = True, seed: int = 0) -> dict:
    """Train both encoders with the MultiDigits defaults, probe them (dt, svm, knn; seeds 0-2)
    and map them with t-SNE; write `summary.json` and `summary.md` beside the run folders."""
    out = Path(out)
    base = TrainConfig(dataset="multidigits", epochs=epochs, seed=seed, out_dir=str(out), progress=progress)
    started = time.perf_counter()
    runs = {
        "vanilla": train(base),
        "dgr": train(replace(base, dgr=DGRConfig())),
    }
    finals = {name: read_metrics(path)[-1] for name, path in runs.items()}
    tasks = list(finals["vanilla"]["test_accuracy"])
    sources = [source_from_checkpoint(path / "checkpoint.pt") for path in runs.values()]
    sources = [replace(s, name=name) for s, name in zip(sources, runs)]
    rows = probe(sources, ProbeConfig(classifiers=PROBE_CLASSIFIERS, seeds=PROBE_SEEDS, jobs=2), out / "probe",
                 maps=("tsne",), max_points=2000, progress=progress)
    probe_acc = {
        (name, t, c): mean_std([r["accuracy"] for r in rows if (r["checkpoint"], r["task"], r["classifier"]) == (name, t, c)])
        for name in runs for t in tasks for c in PROBE_CLASSIFIERS
    }
    summary = {
        "repeval_version": __version__,
        "how": "repeval demo: two `repeval train multidigits` runs with the same seed, without and with --dgr",
        "seed": seed,
        "seconds": round(time.perf_counter() - started, 1),
        "runs": {name: str(path) for name, path in runs.items()},
        "test_accuracy": {name: finals[name]["test_accuracy"] for name in runs},
        "probe": str(out / "probe"),
        "probe_accuracy": {f"{n}/{t}/{c}": v for (n, t, c), v in probe_acc.items()},
    }
    atomic_json(summary, out / "summary.json")

    table = Table(title=f"MultiDigits test accuracy after {finals['vanilla']['epoch'] + 1} epochs")
    table.add_column("encoder")
    for t in tasks:
        table.add_column(t, justify="right")
    for name in runs:
        table.add_row(name, *(f"{finals[name]['test_accuracy'][t]:.4f}" for t in tasks))
    probes_table = Table(title="probes on the frozen encoders (test accuracy, mean ± std over seeds 0-2)")
    probes_table.add_column("encoder")
    probes_table.add_column("task")
    for c in PROBE_CLASSIFIERS:
        probes_table.add_column(c, justify="right")
    for name in runs:
        for t in tasks:
            probes_table.add_row(name, t, *(probe_acc[(name, t, c)] for c in PROBE_CLASSIFIERS))
    console = Console()
    console.print(table)
    console.print(probes_table)

    lines = [
        "# repeval demo", "",
        f"{summary['how']} (seed {seed}, repeval {__version__}, {summary['seconds']} s).", "",
        "| encoder | " + " | ".join(tasks) + " | run |", "|---" * (len(tasks) + 2) + "|",
        *(f"| {name} | " + " | ".join(f"{finals[name]['test_accuracy'][t]:.4f}" for t in tasks)
          + f" | `{runs[name]}` |" for name in runs),
        "", "## Probes on the frozen encoders", "",
        "Decision tree, RBF SVM and kNN (scikit-learn defaults) fitted on the train-split embeddings,",
        "scored on the test split; mean ± std over seeds 0-2 (`repeval probe`).", "",
        "| encoder | task | " + " | ".join(PROBE_CLASSIFIERS) + " |", "|---" * (len(PROBE_CLASSIFIERS) + 2) + "|",
        *(f"| {name} | {t} | " + " | ".join(probe_acc[(name, t, c)] for c in PROBE_CLASSIFIERS) + " |"
          for name in runs for t in tasks),
        "", "![t-SNE of the shared representation](probe/tsne.png)", "",
        "![probe accuracy](probe/probe_bars.png)",
    ]
    atomic_write(out / "summary.md", lambda f: f.write(("\n".join(lines) + "\n").encode()))
    return summary
