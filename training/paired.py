"""Seed-by-seed comparisons of result rows: rows of a report that differ only in DGR, and any
two groups of runs (`repeval compare`). B - A on the training seeds both have (`repeval.stats.paired`)."""

from __future__ import annotations

from pathlib import Path

from repeval.errors import InvalidChoiceError
from repeval.stats import paired
from repeval.training.columns import column_scale, higher_is_better, split_column
from repeval.training.results import SINGLE, Row, find_runs, row_key

def paired_comparisons(rows: list[Row], tasks: list[str]) -> list[dict]:
    """Each DGR row against the same method without DGR, seed by seed, per column."""
    plain = {(r.name, r.method, r.base): r for r in rows if r.dgr_lambda is None}
    out = []
    for row in rows:
        reference = plain.get((row.name, row.method, row.base))
        if row.dgr_lambda is None or reference is None or row.method == SINGLE:
            continue
        for task in tasks:
            if set(reference.by_seed(task)) & set(row.by_seed(task)):
                out.append(_paired_rows(reference, row, task))
    return out


def _paired_rows(a: Row, b: Row, task: str) -> dict:
    """B − A on a column's test metric, seed by seed (the verdict follows its direction)."""
    name, metric = split_column(task)
    return {"a": a.label, "b": b.label, "task": name, "metric": f"test {metric}", "column": task,
            "scale": column_scale(task),
            **paired(a.by_seed(task), b.by_seed(task), higher_is_better=higher_is_better(task)).to_dict()}


def render_paired(comparisons: list[dict]) -> str:
    if not comparisons:
        return ""
    lines = ["| B vs A | task | B − A (points, or the metric's unit) [95 % CI] | n | verdict for B |", "|---|---|---|---|---|"]
    for c in comparisons:
        d, k = c["difference"], c.get("scale", 100.0)
        digits = 2 if k == 100 else 4
        interval = "" if d["std"] is None else f" [{k * d['ci_low']:+.{digits}f}, {k * d['ci_high']:+.{digits}f}]"
        lines.append(f"| {c['b']} vs {c['a']} | {c.get('column', c['task'])} | {k * d['mean']:+.{digits}f}{interval} | {d['n']} | {c['verdict']} |")
    return "\n".join(lines) + "\n"


def write_comparison(out: Path, group_a: list[str], group_b: list[str], comparisons: list[dict], table: str) -> None:
    """`compare.json` (how it was made, and the comparisons) and `compare.md` (the table) in `out`."""
    from repeval import __version__
    from repeval.storage import atomic_json, atomic_write

    atomic_json({"repeval_version": __version__, "a": [str(p) for p in group_a], "b": [str(p) for p in group_b],
                 "comparisons": comparisons}, Path(out) / "compare.json")
    atomic_write(Path(out) / "compare.md", lambda f: f.write(table.encode()))


def compare(paths_a: list[str | Path], paths_b: list[str | Path]) -> tuple[list[dict], str]:
    """Paired comparison of two groups of runs (each one configuration over several seeds), per
    task: B − A on the seeds both have."""
    groups = []
    for name, paths in (("A", paths_a), ("B", paths_b)):
        runs = find_runs(paths)
        keys = {row_key(r.config) + (r.config.dataset,) for r in runs}
        if len(keys) > 1:
            raise InvalidChoiceError(
                f"group {name} mixes {len(keys)} configurations ({', '.join(sorted(str(k[0]) for k in keys))}); "
                "give the runs of one configuration (several seeds) per group"
            )
        row = Row(*row_key(runs[0].config), runs=runs)
        seeds = [r.config.seed for r in runs]
        if len(set(seeds)) != len(seeds):
            raise InvalidChoiceError(f"group {name} has two runs with the same seed; a pairing needs one run per seed")
        groups.append(row)
    a, b = groups
    both = sorted({r.path.resolve() for r in a.runs} & {r.path.resolve() for r in b.runs})
    if both:
        raise InvalidChoiceError(f"run {str(both[0])!r} is in both groups; B − A of a run with itself is 0 by construction")
    datasets = (a.runs[0].config.dataset, b.runs[0].config.dataset)
    if datasets[0] != datasets[1]:
        raise InvalidChoiceError(f"group A ran on dataset {datasets[0]!r} and group B on {datasets[1]!r}; "
                                 "a paired comparison needs the same tasks on the same data")
    tasks = [t for t in a.runs[0].scores if t in b.runs[0].scores]
    if not tasks:
        raise InvalidChoiceError(f"groups A and B share no task (A: {', '.join(a.runs[0].scores)}; "
                                 f"B: {', '.join(b.runs[0].scores)})")
    comparisons = []
    for task in tasks:
        if not set(a.by_seed(task)) & set(b.by_seed(task)):
            raise InvalidChoiceError(f"groups A and B share no training seed (A: {sorted(a.by_seed(task))}, "
                                     f"B: {sorted(b.by_seed(task))}); run B with A's seeds")
        comparisons.append(_paired_rows(a, b, task))
    return comparisons, render_paired(comparisons)
