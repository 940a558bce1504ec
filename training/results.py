"""`repeval report RUNS...`: Table-1 style results of training runs and the Figure-2 chart.

Runs are grouped into rows by method, method options (minus a single run's task) and DGR
setting; seeds are averaged. A column is one test metric of one task (a classification task's
column is its accuracy and is named after the task; dense tasks have a column per metric,
"depth abs_err"), taken at the last finished epoch, reported over training seeds as mean ± sample std [95 % t-interval] (`repeval.stats`),
with n. Rows that differ only in DGR and share seeds are also compared seed by seed
(`repeval.training.paired`), which also compares any two groups of runs. Delta_MTL
(paper eq. 6, `metrics.delta_mtl`) compares each row's means with the mean of the `single`
runs of each task, each metric signed by its direction (`repeval.kinds.metric_info`); without
single runs the column is left out. Best values (by direction) are bold and second best
underlined, among the multi-task rows.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from repeval import __version__
from repeval.errors import DataNotFoundError, InvalidChoiceError, check_choice
from repeval.metrics import DELTA_HEADER, DELTA_VARIANTS, PUBLISHED_BASES, convention_note
from repeval.stats import SeedSummary, seed_summary
from repeval.storage import atomic_json, atomic_write
from repeval.training import run as run_files
from repeval.training.columns import (
    best_on_test, column_header, column_name, column_scale, delta_or_none, higher_is_better, nested, split_column,
)
from repeval.training.config import TrainConfig
from repeval.training.methods import TABLE_ORDER

SINGLE = "single"


@dataclass
class RunResult:
    path: Path
    config: TrainConfig
    metrics: dict[str, dict[str, float]]  # {task: {metric: value}} at the last finished epoch

    @property
    def scores(self) -> dict[str, float]:
        """Column -> value (`column_name`)."""
        return {column_name(t, m): v for t, values in self.metrics.items() for m, v in values.items()}


@dataclass
class Row:
    name: str  # method and options: "cagrad", "cagrad + SAM", "nash update_every=2"
    method: str
    base: str | None  # the method SAM or PTA wraps
    dgr_lambda: float | None
    runs: list[RunResult] = field(default_factory=list)
    summary: dict[str, SeedSummary] = field(default_factory=dict)
    delta: float | None = None

    @property
    def mean(self) -> dict[str, float]:
        return {t: s.mean for t, s in self.summary.items()}

    @property
    def std(self) -> dict[str, float | None]:
        """Sample std over training seeds (None with one seed)."""
        return {t: s.std for t, s in self.summary.items()}

    def by_seed(self, task: str) -> dict[int, float]:
        return {run.config.seed: run.scores[task] for run in self.runs if task in run.scores}

    @property
    def trained(self) -> set[str]:
        """The tasks this row's runs trained on (Delta_MTL is over these)."""
        return {split_column(c)[0] for run in self.runs for c in run.scores}

    @property
    def label(self) -> str:
        return self.name if self.dgr_lambda is None else f"{self.name} + DGR (λ={self.dgr_lambda:g})"

    @property
    def seeds(self) -> list[int]:
        return sorted({run.config.seed for run in self.runs})


SELECTIONS = ("final", "best-on-test")


def find_runs(paths: list[str | Path], selection: str = "final") -> list[RunResult]:
    """Finished runs under the given run or sweep folders; unfinished runs are skipped.

    `selection`: "final" (default) takes the last epoch's test metrics; "best-on-test" takes each
    metric's best value over the epochs (by its direction), as Auto-lambda's printed "Best" does:
    a selection on the test set, labelled so wherever it is shown."""
    check_choice("report", "selection", selection, SELECTIONS)
    results = []
    for root in map(Path, paths):
        if not root.exists():
            raise DataNotFoundError(f"{str(root)!r} does not exist")
        candidates = [root] if (root / run_files.CONFIG).is_file() else sorted(p.parent for p in root.rglob(run_files.CONFIG))
        for run_dir in candidates:
            config = run_files.read_config(run_dir)
            metrics = run_files.read_metrics(run_dir)
            if len(metrics) < (config.epochs or 0) or not metrics:
                continue
            test = metrics[-1]["test"] if selection == "final" else best_on_test([m["test"] for m in metrics])
            results.append(RunResult(run_dir, config, test))
    if not results:
        raise DataNotFoundError(f"no finished run under {', '.join(map(str, paths))}")
    return results


def row_key(config: TrainConfig, varying: tuple[str, ...] = ()) -> tuple[str, str, str | None, float | None]:
    """(name, method, base, DGR lambda): runs that differ only in seed (and a single run's task)
    share a row. `varying`: the settings (`settings(config)` keys) that differ among the
    report's runs; the row's name shows this run's values of them (a single-task run's tasks excepted)."""
    base = config.method_args.get("base")
    options = {k: v for k, v in config.method_args.items() if k not in ("task", "base")}
    name = config.method if base is None else f"{base} + {config.method.upper()}"
    name += "".join(f" {k}={v}" for k, v in sorted(options.items()))
    own = settings(config)
    for key in varying:
        if key in own and not (key == "tasks" and config.method == SINGLE):
            value = own[key]
            text = "+".join(value) if isinstance(value, (list, tuple)) else value
            name += f" {key}={('all' if key == 'tasks' else 'default') if value is None else text}"
    return name, config.method, base, None if config.dgr is None else config.dgr.strength


# Fields that never tell rows apart: what the row key already names, and where a run executed.
_NOT_SETTINGS = ("method", "method_args", "dgr", "seed", "out_dir", "progress", "num_workers", "log_every", "device",
                 "channels_last", "data_on_device", "tensorboard")


def settings(config: TrainConfig) -> dict:
    """A run's training options (DGR's as `dgr_<field>`, without its strength), the values a
    sweep axis varies."""
    d = {k: v for k, v in config.to_dict().items() if k not in _NOT_SETTINGS}
    if config.dgr is not None:
        d.update({f"dgr_{k}": v for k, v in config.to_dict()["dgr"].items() if k != "lam"})
    return d


def varying_settings(runs: list[RunResult]) -> tuple[str, ...]:
    values = defaultdict(set)
    for run in runs:
        for k, v in settings(run.config).items():
            values[k].add(repr(v))
    return tuple(k for k, v in values.items() if len(v) > 1 and not (k == "tasks" and _only_single_differs(runs)))


def _only_single_differs(runs: list[RunResult]) -> bool:
    return len({repr(r.config.tasks) for r in runs if r.config.method != SINGLE}) <= 1


def build_rows(runs: list[RunResult], variant: str = "per-task", baseline_name: str | None = None
               ) -> tuple[list[Row], list[str], dict]:
    """Rows (single-task baseline first), columns, and the baseline's provenance. Delta_MTL is
    against the `single` runs among `runs`, or against the published numbers `baseline_name`
    (`repeval.metrics.PUBLISHED_BASES`) when given."""
    check_choice("report", "variant", variant, DELTA_VARIANTS)
    if baseline_name is not None:
        check_choice("report", "baseline", baseline_name, tuple(PUBLISHED_BASES))
    found = {run.config.dataset for run in runs}
    if len(found) > 1:
        raise InvalidChoiceError(f"a report covers one dataset; these runs mix {', '.join(sorted(found))}")
    tasks = list(dict.fromkeys(c for run in runs for c in run.scores))  # the columns
    rows: dict[tuple, Row] = {}
    varying = varying_settings(runs)
    for run in runs:
        key = row_key(run.config, varying)
        rows.setdefault(key, Row(*key)).runs.append(run)
    for row in rows.values():
        per_task = defaultdict(list)
        for run in row.runs:
            own = [c for c in tasks if split_column(c)[0] == run.config.method_args["task"]] if row.method == SINGLE else tasks
            for task in (c for c in own if c in run.scores):
                per_task[task].append(run.scores[task])
        row.summary = {t: seed_summary(v) for t, v in per_task.items()}
    single = [r for r in rows.values() if r.method == SINGLE]
    baseline: dict = {}
    lower = {split_column(c)[1] for c in tasks if not higher_is_better(c)}
    if baseline_name is not None:
        published = PUBLISHED_BASES[baseline_name]
        needed = [column_name(t, m) for t, values in published.items() for m in values]
        missing = [c for c in needed if c not in tasks]
        if missing:
            raise InvalidChoiceError(f"baseline {baseline_name!r} needs the columns {', '.join(missing)}, which these runs do not "
                                     f"report (they report: {', '.join(tasks)})")
        baseline = {"row": f"published: {baseline_name}", "runs": [], "means": published}
        for row in rows.values():  # over the tasks the row trained (all, unless --tasks chose some)
            own = [c for c in needed if split_column(c)[0] in row.trained]
            if own and all(c in row.mean for c in own):
                row.delta = delta_or_none(nested({c: row.mean[c] for c in own}),
                                          {t: published[t] for t in row.trained if t in published}, lower, variant)
    elif single and all(t in single[0].mean for t in tasks):
        base = single[0]
        baseline = {"row": base.label, "runs": [str(r.path) for r in base.runs], "means": base.mean}
        for row in rows.values():
            own = [c for c in tasks if split_column(c)[0] in row.trained]
            if own and all(c in row.mean for c in own):
                row.delta = delta_or_none(nested({c: row.mean[c] for c in own}), nested({c: base.mean[c] for c in own}),
                                          lower, variant)
    position = {m: i for i, m in enumerate(TABLE_ORDER)}

    def order(row: Row) -> tuple:
        return position.get(row.method, len(position)), position.get(row.base, -1), row.label

    ordered = sorted(rows.values(), key=order)
    return ordered, tasks, baseline


def ranks(rows: list[Row], tasks: list[str]) -> dict[tuple[int, str], int]:
    """(row index, column) -> 1 for best, 2 for second, among multi-task rows."""
    marks = {}
    for column in [*tasks, "delta"]:
        scored = [(row.delta if column == "delta" else row.mean.get(column), i)
                  for i, row in enumerate(rows) if row.method != SINGLE]
        values = sorted({v for v, _ in scored if v is not None}, reverse=column == "delta" or higher_is_better(column))
        for v, i in scored:
            if v is not None and v in values[:2]:
                marks[(i, column)] = values.index(v) + 1
    return marks


def _cell(row: Row, column: str) -> str | None:
    if column == "delta":
        return None if row.delta is None else f"{100 * row.delta:+.2f}"
    scale = column_scale(column)
    # Errors in raw units (metres, degrees) need more digits than percentages.
    return row.summary[column].text(scale=scale, digits=2 if scale == 100 else 4) if column in row.summary else None


def render_markdown(rows: list[Row], tasks: list[str], with_delta: bool) -> str:
    marks = ranks(rows, tasks)
    columns = [*tasks, *(["delta"] if with_delta else [])]
    header = ["method", *[column_header(t) for t in tasks], *([DELTA_HEADER] if with_delta else []), "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, row in enumerate(rows):
        cells = []
        for c in columns:
            text = _cell(row, c) or "–"
            mark = marks.get((i, c))
            cells.append(f"**{text}**" if mark == 1 else f"<u>{text}</u>" if mark == 2 else text)
        lines.append(f"| {row.label} | " + " | ".join(cells) + f" | {len(row.seeds)} |")
    return "\n".join(lines) + "\n"


def render_latex(rows: list[Row], tasks: list[str], with_delta: bool) -> str:
    marks = ranks(rows, tasks)
    columns = [*tasks, *(["delta"] if with_delta else [])]
    head = ["Method", *[_tex(t) for t in tasks], *([r"$\Delta_{MTL}$ (\%) $\uparrow$"] if with_delta else [])]
    out = [r"\begin{tabular}{l" + "c" * len(columns) + "}", r"\toprule", " & ".join(head) + r" \\", r"\midrule"]
    for i, row in enumerate(rows):
        cells = []
        for c in columns:
            text = (_cell(row, c) or "--").replace("±", r"$\pm$")
            mark = marks.get((i, c))
            cells.append(rf"\textbf{{{text}}}" if mark == 1 else rf"\underline{{{text}}}" if mark == 2 else text)
        out.append(" & ".join([_tex(row.label), *cells]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out) + "\n"


def _tex(text: str) -> str:
    return text.replace("_", r"\_").replace("λ", r"$\lambda$").replace("%", r"\%")


def render_csv(rows: list[Row], tasks: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    fields = ("mean", "std", "ci_low", "ci_high")
    writer.writerow(["method", "dgr_lambda", *[f"{t}_{s}" for t in tasks for s in fields], "delta_mtl", "seeds"])
    for row in rows:
        values = [_blank(getattr(row.summary[t], f)) if t in row.summary else "" for t in tasks for f in fields]
        writer.writerow([row.label, "" if row.dgr_lambda is None else row.dgr_lambda, *values,
                         "" if row.delta is None else row.delta, len(row.seeds)])
    return buffer.getvalue()


def _blank(value):
    return "" if value is None else value


def plot_delta_bars(rows: list[Row], out_stem: str | Path) -> dict[str, dict[str, float]]:
    """Figure 2: for each method, Delta_MTL alone (grey) and with SAM, PTA or DGR (its best
    lambda when several). Rows that combine two of them (e.g. SAM + DGR) stay in the table only."""
    from repeval.figures import pyplot, save_figure

    plt = pyplot()

    bars: dict[str, dict[str, float]] = {}
    for row in rows:
        if row.method == SINGLE or row.delta is None:
            continue
        if row.base is not None and row.dgr_lambda is not None:
            continue
        if row.base is not None:
            group, variant = row.base, row.method.upper()
        else:
            group, variant = row.name, "alone" if row.dgr_lambda is None else "DGR"
        best = bars.setdefault(group, {}).get(variant, -np.inf)
        bars[group][variant] = max(best, row.delta)
    variants = [v for v in ("alone", "SAM", "PTA", "DGR") if any(v in b for b in bars.values())]
    colors = {"alone": "0.6", "SAM": "tab:blue", "PTA": "tab:green", "DGR": "tab:red"}
    names = list(bars)
    x = np.arange(len(names))
    width = 0.8 / max(len(variants), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 1.5), 3.2))
    for i, variant in enumerate(variants):
        label = "+ DGR (best λ)" if variant == "DGR" else variant if variant == "alone" else f"+ {variant}"
        ax.bar(x + (i - (len(variants) - 1) / 2) * width, [100 * bars[n].get(variant, np.nan) for n in names],
               width, label=label, color=colors[variant])
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, names, rotation=30, ha="right")
    ax.set_ylabel(DELTA_HEADER)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    save_figure(fig, out_stem)
    return bars


def write_report(paths: list[str | Path], out_dir: str | Path, variant: str = "per-task",
                 baseline: str | None = None, selection: str = "final") -> tuple[Path, str]:
    """Write table.md / .csv / .tex, delta_mtl.png / .svg and report.json; returns the folder
    and the Markdown table. `baseline` names published single-task numbers for Delta_MTL;
    `selection` is "final" or "best-on-test" (`find_runs`)."""
    from repeval.training.paired import paired_comparisons, render_paired  # it builds on this module's rows
    from repeval.training.pull_report import plot_dgr_pull, pull_histories, pull_sentence

    runs = find_runs(paths, selection)
    baseline_name = baseline
    rows, tasks, baseline = build_rows(runs, variant, baseline_name)
    with_delta = bool(baseline)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(rows, tasks, with_delta)
    if baseline_name is not None:
        note = f"\nΔ_MTL ({variant}) against the published single-task numbers {baseline_name!r}: {baseline['means']}\n"
        sign = convention_note(variant, baseline_name)
        note += f"\n{sign}\n" if sign else ""
    elif with_delta:
        note = f"\nΔ_MTL ({variant}) against single-task runs: {', '.join(baseline['runs'])}\n"
    else:
        note = "\nNo single-task runs among the inputs: Δ_MTL needs `--method single` runs of every task (or --baseline).\n"
    note += ("\nEvery column is the final epoch's test metric (no selection on the test set).\n" if selection == "final" else
             "\nTEST-SET SELECTION: every column is the best value of its metric over all epochs, chosen on the test "
             "set itself (as Auto-λ's printed \"Best\"); it overstates what a model selected without test data achieves.\n")
    histories = pull_histories(rows)
    if histories:
        plot_dgr_pull(histories, out / "dgr_pull")
        sentence = pull_sentence(histories)
        note += f"\nDGR's pull (dgr_pull.png): {sentence or 'below 1 for most of training in every DGR row.'}\n"
    comparisons = paired_comparisons(rows, tasks)
    if comparisons:
        note += ("\nPaired comparisons on shared training seeds (B − A; 'better'/'worse' only when the 95 % "
                 "interval excludes 0):\n\n" + render_paired(comparisons))
    atomic_write(out / "table.md", lambda f: f.write((markdown + note).encode()))
    atomic_write(out / "table.csv", lambda f: f.write(render_csv(rows, tasks).encode()))
    atomic_write(out / "table.tex", lambda f: f.write(render_latex(rows, tasks, with_delta).encode()))
    if with_delta and any(r.delta is not None for r in rows):  # none where every baseline value is 0
        plot_delta_bars(rows, out / "delta_mtl")
    atomic_json({
        "repeval_version": __version__, "inputs": [str(p) for p in paths], "delta_variant": variant,
        "selection": selection,
        "metric": ("each column's test metric at the last finished epoch" if selection == "final" else
                   "each column's best test value over all epochs (test-set selection)")
        + "; mean, sample std and 95 % t-interval over training seeds",
        "paired_comparisons": comparisons,
        "single_task_baseline": baseline,
        "rows": [{"label": r.label, "method": r.method, "base": r.base, "dgr_lambda": r.dgr_lambda, "mean": r.mean, "std": r.std,
                  "seed_summary": {t: x.to_dict() for t, x in r.summary.items()},
                  "delta_mtl": r.delta, "runs": [{"path": str(x.path), "seed": x.config.seed, "config": x.config.to_dict()}
                                                for x in r.runs]} for r in rows],
    }, out / "report.json")
    return out, markdown + note

