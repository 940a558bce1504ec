"""`make demo`: does DGR change anything on MultiDigits, beyond seed-to-seed noise? Trains vanilla
and DGR encoders with 3 training seeds each on a harder, non-saturated MultiDigits, probes the
frozen encoders, measures their universality (linear and MLP heads), compares the two
configurations seed by seed, and writes one report (`runs/demo/report.md` and `report.html`).

Sits at the top layer beside the CLI: it composes training and probing. Rerunning it reuses the
finished runs (and finishes killed ones) in the output folder."""

from __future__ import annotations

import time
from dataclasses import asdict, replace
from pathlib import Path

from repeval import __version__
from repeval.app.console import console as make_console
from repeval.app.demo_report import write_report
from repeval.probes.config import ProbeConfig, UniversalityConfig
from repeval.probes.embeddings import source_from_checkpoint
from repeval.probes.report import embedding_maps, summary_table
from repeval.probes.universality_report import universality_table
from repeval.probes.workflow import extract_all, probe, universality_of
from repeval.stats import SeedSummary, paired, seed_summary
from repeval.storage import atomic_json
from repeval.training.config import DGRConfig, TrainConfig
from repeval.training.curves import plot_training_curves
from repeval.training.loop import train
from repeval.training.run import CONFIG, read_metrics

# Harder than the default MultiDigits, so accuracy is not saturated: 2,000 training canvases
# (not 10,000) and digits shifted by up to 6 px (not 2). About 87 / 87 / 52 % test accuracy
# (left / right / sum) after 10 epochs.
DEMO_DATA = {"n_train": 2000, "jitter": 6}
DEMO_EPOCHS, DEMO_LR_STEP = 10, 4
SEEDS = (0, 1, 2)
PROBE_CLASSIFIERS = ("dt", "svm", "knn")
FAMILIES = ("linear", "mlp")
# Universality reads the default held-out optimum: these embeddings separate the training split,
# so the train-fit optimum has loss ~0 and its gap measures only the embedding's scale.
UNIVERSALITY = UniversalityConfig()
CONFIGS = {"vanilla": None, "dgr": DGRConfig()}


def run_demo(out: Path, epochs: int | None = None, progress: bool = True, seeds: tuple[int, ...] = SEEDS,
             dataset_args: dict | None = None) -> dict:
    """Train, probe, measure, compare and report; returns the summary also written to `summary.json`.

    >>> summary = run_demo(Path("runs/demo"))  # doctest: +SKIP
    """
    out = Path(out)
    started = time.perf_counter()
    phases: dict[str, float] = {}
    base = TrainConfig(dataset="multidigits", dataset_args={**DEMO_DATA, **(dataset_args or {})},
                       epochs=epochs or DEMO_EPOCHS, lr_step=DEMO_LR_STEP, out_dir=str(out), progress=progress)
    runs = train_configs(out, base, CONFIGS, seeds)
    phases["training"] = time.perf_counter() - started
    histories, probe_rows, universality, sets = measure_runs(out, runs, progress, phases)
    first = {n: f"{n}-seed{seeds[0]}" for n in CONFIGS}
    mark = time.perf_counter()
    embedding_maps([s for s in sets if s.source.name in first.values()], out / "probe", method="tsne", max_points=2000)
    plot_training_curves({first[n]: histories[(n, seeds[0])] for n in CONFIGS}, out / "training_curves")
    phases["t-SNE and curves"] = time.perf_counter() - mark

    tasks = list(histories[("vanilla", seeds[0])][-1]["test_accuracy"])
    comparisons = compare_to_reference("vanilla", histories, probe_rows, universality, tasks, seeds)
    console = make_console()
    console.print(summary_table(probe_rows))
    for family in FAMILIES:
        console.print(universality_table(universality[family]))
    summary = {
        "repeval_version": __version__, "seeds": list(seeds), "seconds": round(time.perf_counter() - started, 1),
        "train_config": base.resolved().to_dict(), "dgr": asdict(CONFIGS["dgr"]),
        "runs": {f"{n}-seed{s}": str(p) for (n, s), p in runs.items()},
        "comparisons": comparisons, "universality": asdict(UNIVERSALITY),
        "grid_edges": sorted({f"{r['checkpoint']}/{r['task']} ({fam}: {r['l2_edge']})" for fam, rows in universality.items()
                              for r in rows if r.get("l2_edge")}),
        "phase_seconds": {k: round(v, 1) for k, v in phases.items()},
    }
    atomic_json(summary, out / "summary.json")
    md, page = write_report(_report_blocks(comparisons, summary, tasks, base), out, "repeval demo report")
    console.print(f"report: {md} and {page}  ({summary['seconds']} s: "
                  + ", ".join(f"{k} {v:.0f} s" for k, v in summary["phase_seconds"].items()) + ")")
    return summary


def train_configs(out: Path, base: TrainConfig, configs: dict[str, DGRConfig | None],
                  seeds: tuple[int, ...]) -> dict[tuple[str, int], Path]:
    """One run per (configuration, training seed), in `<out>/<name>-seed<s>`."""
    return {(name, s): _train_or_reuse(replace(base, dgr=dgr, seed=s), out / f"{name}-seed{s}")
            for name, dgr in configs.items() for s in seeds}


def measure_runs(out: Path, runs: dict[tuple[str, int], Path], progress: bool = False,
                 phases: dict[str, float] | None = None):
    """Metrics histories, probe rows (dt, svm, knn) and universality rows (linear and MLP heads,
    held-out optimum) of every run; and the embedding sets. Adds each phase's seconds to `phases`."""
    phases = {} if phases is None else phases
    mark = time.perf_counter()
    histories = {key: read_metrics(path) for key, path in runs.items()}
    sources = [replace(source_from_checkpoint(path / "checkpoint.pt"), name=f"{n}-seed{s}") for (n, s), path in runs.items()]
    probe_rows = probe(sources, ProbeConfig(classifiers=PROBE_CLASSIFIERS, seeds=(0,), jobs=2), out / "probe",
                       progress=progress).rows
    sets = extract_all(sources)  # from the cache probe just filled
    phases["probes"] = time.perf_counter() - mark
    universality = {}
    for family in FAMILIES:
        mark = time.perf_counter()
        universality[family] = universality_of(sets, replace(UNIVERSALITY, head=family), out / f"universality-{family}")
        phases[f"universality ({family})"] = time.perf_counter() - mark
    return histories, probe_rows, universality, sets


def _train_or_reuse(config: TrainConfig, run_dir: Path) -> Path:
    if (run_dir / CONFIG).is_file():  # a previous demo's run: finished, or resumed where it was killed
        return train(config, resume_dir=run_dir)
    return train(config, run_dir=run_dir)


def compare_to_reference(reference: str, histories, probe_rows, universality, tasks, seeds) -> list[dict]:
    """Every measured quantity of every configuration over training seeds, and each configuration
    against `reference` seed by seed, with the quantity's direction."""
    names = list(dict.fromkeys(n for n, _ in histories))
    measures = {}  # (quantity, task) -> (higher_is_better, {config: {seed: value}})
    for task in tasks:
        measures[("test accuracy (trained head)", task)] = (True, {
            n: {s: histories[(n, s)][-1]["test_accuracy"][task] for s in seeds} for n in names})
        for clf in PROBE_CLASSIFIERS:
            measures[(f"{clf} probe accuracy", task)] = (True, {
                n: {s: next(r["accuracy"] for r in probe_rows if (r["checkpoint"], r["task"], r["classifier"])
                            == (f"{n}-seed{s}", task, clf)) for s in seeds} for n in names})
        for family, rows in universality.items():
            measures[(f"universality gap, {family} heads (held-out)", task)] = (False, {
                n: {s: next(r["gap_mean"] for r in rows if (r["checkpoint"], r["task"]) == (f"{n}-seed{s}", task))
                    for s in seeds} for n in names})
    out = []
    for name in names:
        if name == reference:
            continue
        for (quantity, task), (higher, values) in measures.items():
            out.append({
                "quantity": quantity, "task": task, "higher_is_better": higher, "a": reference, "b": name,
                "a_summary": seed_summary(list(values[reference].values())).to_dict(),
                "b_summary": seed_summary(list(values[name].values())).to_dict(),
                "b_minus_a": paired(values[reference], values[name], higher_is_better=higher).to_dict(),
            })
    return out


def _cell(s: dict, scale: float) -> str:
    return SeedSummary(**s).text(scale)


def _report_blocks(comparisons: list[dict], summary: dict, tasks: list[str], base: TrainConfig) -> list[tuple]:
    n = len(summary["seeds"])
    rows = []
    for c in comparisons:
        scale = 100.0 if "accuracy" in c["quantity"] else 1.0
        d = c["b_minus_a"]
        rows.append([c["quantity"], c["task"], _cell(c["a_summary"], scale), _cell(c["b_summary"], scale),
                     _cell(d["difference"], scale), d["verdict"]])
    verdicts = [c["b_minus_a"]["verdict"] for c in comparisons]
    better, worse = verdicts.count("better"), verdicts.count("worse")
    dgr = CONFIGS["dgr"]
    return [
        ("h1", "repeval demo: does Dummy Gradient norm Regularization change anything on MultiDigits?"),
        ("p", "DGR fixes three random, never-trained copies of each task's predictor (dummy heads) and penalises "
              "how steeply the loss of those dummies changes with their weights. The idea (Shin, Do & Son, arXiv "
              "2409.16651): an encoder whose features let even an arbitrary predictor do well is more universal. "
              f"Here a vanilla encoder (sum of task losses) and a DGR encoder were each trained with {n} training "
              "seeds, and every number below is compared seed by seed, so that seed-to-seed noise is not read as an "
              "effect."),
        ("p", f"Data: MultiDigits made harder so accuracy is not saturated ({base.dataset_args['n_train']} training "
              f"canvases, digits jittered by up to {base.dataset_args['jitter']} px): tasks left digit (10 classes), "
              "right digit (10) and their sum (19); test canvases use handwriting never seen in training. Encoder: "
              f"timm test_resnet, {base.epochs} epochs; DGR with the paper's penalty (gradient norm), exact "
              f"estimator, lambda = {dgr.strength}, {dgr.dummies} dummies per task. Seeds {summary['seeds']}."),
        ("h2", "1. Vanilla vs DGR, seed by seed"),
        ("table", ["quantity", "task", "vanilla", "DGR", "DGR − vanilla", "verdict for DGR"], rows),
        ("p", "Cells: mean ± sample std [95 % t-interval] over the training seeds (accuracies in %). "
              "'DGR − vanilla' is the per-seed difference; the verdict says 'better' or 'worse' only when its 95 % "
              "interval excludes zero, taking the direction into account (a smaller universality gap is better). "
              "Probes: decision tree, RBF SVM and kNN (scikit-learn defaults) on the frozen train-split features, "
              "scored on the test split (the paper's Figure 3a). Universality gap: the matched loss of a random, "
              "untrained head minus that of the best head of its family (paper Definition 2), both on the test split "
              "(the permutation matched on the training split). The best head is the held-out optimum: its L2 "
              f"penalty (and, for MLP heads, its training epochs) chosen by {UNIVERSALITY.cv}-fold cross-validation on "
              "the training split, then refitted on all of it. Fitted to the training split alone (Definition 2 as "
              "written), these embeddings are separable: that optimum's loss is 0 at unbounded weights and its gap "
              "measures only the features' scale (`repeval universality --optimal train-fit` shows it)."),
        ("p", f"Across the {len(comparisons)} comparisons: DGR better on {better}, worse on {worse}, no detectable "
              f"difference on {len(comparisons) - better - worse} (n = {n} seeds; with so few seeds only large, "
              "consistent differences can be detected, and some of the comparisons will come out 'better' or "
              "'worse' by chance)."),
        *([("p", f"The held-out choice sat on its grid's edge for {len(summary['grid_edges'])} encoder/task/family "
                 f"combinations ({', '.join(summary['grid_edges'])}): a wider grid might find a slightly better head "
                 "there.")] if summary["grid_edges"] else []),
        ("h2", "2. Training"),
        ("img", "training_curves.png", f"Test accuracy (solid) and training loss (dashed) per epoch, seed {summary['seeds'][0]}."),
        ("h2", "3. Probes"),
        ("img", "probe/probe_bars.png", "Probe accuracy per task and classifier, every encoder (Figure 3a layout)."),
        ("h2", "4. The shared representation, mapped"),
        ("img", "probe/tsne.png", f"t-SNE of 2,000 test canvases, seed {summary['seeds'][0]}: one row per task, vanilla "
                                  "left, DGR right (Figure 3b layout). Coordinates in probe/coords.npz."),
        ("p", f"Made by repeval {__version__} (`make demo`) in {summary['seconds']} s. Runs: "
              f"{', '.join(summary['runs'].values())}; probes in probe/, universality in universality-linear/ and "
              "universality-mlp/, every number with its configuration in those folders' JSON files and summary.json."),
    ]
