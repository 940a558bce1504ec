"""`repeval reproduce sensitivity --dataset D`: the paper's Table 4 as resumable sweeps.

- 4(a), dummies: EW with DGR for d in {1, 3, 5} dummy heads per task, EW alone, and each task alone;
- 4(a), task counts: EW alone and with DGR (d = 3) on the dataset's first 1 and 2 tasks (its
  first 3 are the dummies sweep's d = 3 row). The paper does not say which tasks make up
  "NYUv2 (1)" and "(2)"; repeval takes them in the dataset's order (seg; seg + depth).
  Delta_MTL of each row is over the tasks it trained, against single-task runs of those tasks;
- 4(b): the same SPLIT network on a Swin backbone (`swin_tiny_patch4_window7_224`, feature maps
  at its stride 32, ASPP rates scaled to them): single-task, EW, EW + DGR.

Each table is a sweep with its own report; 4(a) also gets `table4a.md` in the paper's layout.
DGR is the scene protocol's (squared penalty, one-sided finite differences, eps 1e-3, lambda 0.1).
On nyuv2 and cityscapes the recipe is Tables 2-3's; on the embedded `scenes` its CPU defaults
with 4 epochs (`reproduce.scene_train`). 3 seeds; `smoke` runs one tiny seed of every row."""

from __future__ import annotations

from pathlib import Path

from repeval import __version__, datasets
from repeval.storage import atomic_json, atomic_write
from repeval.training.reproduce import SCENE_DGR, scene_train

SENSITIVITY_DATASETS = ("nyuv2", "cityscapes", "scenes")
TABLES = ("a", "b", "all")
DUMMIES = [1, 3, 5]
SWIN = "swin_tiny_patch4_window7_224"


def sensitivity_specs(dataset: str, data_dir, smoke: bool = False, table: str = "all",
                      pretrained_file: str | None = None) -> dict[str, dict]:
    """{part: sweep spec} of the parts of Table 4 asked for ("a": dummies and tasks; "b": swin)."""
    train = scene_train(dataset, data_dir, smoke)
    seeds = [0] if smoke else [0, 1, 2]
    suffix = "-smoke" if smoke else ""
    dgr = dict(SCENE_DGR, dummies=3)
    specs = {}
    if table in ("a", "all"):
        no_d = {k: v for k, v in dgr.items() if k != "dummies"}
        specs["dummies"] = {"name": f"{dataset}-table4a-dummies{suffix}", "train": train, "dgr": no_d,
                            "grid": {"methods": ["single", "ew"], "dgr": [False, True], "lambdas": [0.1], "seeds": seeds,
                                     "dgr_methods": ["ew"], "dgr_dummies": DUMMIES}}
        names = datasets.task_names(dataset)
        specs["tasks"] = {"name": f"{dataset}-table4a-tasks{suffix}", "train": train, "dgr": dgr,
                          "grid": {"methods": ["ew"], "dgr": [False, True], "lambdas": [0.1], "seeds": seeds,
                                   "tasks": [",".join(names[:k]) for k in range(1, len(names))]}}
    if table in ("b", "all"):
        swin = dict(train, backbone=SWIN, aspp_rates="auto", pretrained_file=pretrained_file)
        if smoke:
            swin.update(dataset_args={**train["dataset_args"], **({"n_train": 4, "n_test": 2} if dataset == "scenes" else {})})
        specs["swin"] = {"name": f"{dataset}-table4b-swin{suffix}", "train": swin, "dgr": dgr,
                         "grid": {"methods": ["single", "ew"], "dgr": [False, True], "lambdas": [0.1], "seeds": seeds,
                                  "dgr_methods": ["ew"]}}
    return specs


def table4a(rows: list, all_tasks: list[str]) -> tuple[list[dict], str]:
    """The paper's Table 4(a) from the report rows of both 4(a) sweeps: one line per dummy count
    (EW vs EW + DGR with d heads, all tasks) and per task count (EW vs EW + DGR, d = 3)."""
    def setting(row) -> tuple[int, int | None]:
        config = row.runs[0].config
        return len(config.tasks or all_tasks), None if config.dgr is None else config.dgr.dummies

    ew = {setting(r): r for r in rows if r.method == "ew"}
    lines = []
    for d in DUMMIES:
        lines.append({"setting": f"d={d}", "tasks": len(all_tasks), "dummies": d,
                      "vanilla": _delta(ew.get((len(all_tasks), None))), "dgr": _delta(ew.get((len(all_tasks), d)))})
    for k in range(1, len(all_tasks) + 1):
        lines.append({"setting": f"({k}) {'+'.join(all_tasks[:k])}", "tasks": k, "dummies": 3,
                      "vanilla": _delta(ew.get((k, None))), "dgr": _delta(ew.get((k, 3)))})
    text = ["| setting | Vanilla Δ_MTL (%) | + DGR Δ_MTL (%) | DGR − Vanilla |", "|---|---|---|---|"]
    for line in lines:
        v, g = line["vanilla"], line["dgr"]
        diff = "" if v is None or g is None else f"{100 * (g - v):+.2f}"
        text.append(f"| {line['setting']} | {_pct(v)} | {_pct(g)} | {diff} |")
    return lines, "\n".join(text) + "\n"


def _delta(row) -> float | None:
    return None if row is None else row.delta


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:+.2f}"


def run_sensitivity(dataset: str, data_dir, out: Path, smoke: bool, table: str, progress: bool,
                    pretrained_file: str | None = None) -> list[tuple[str, str]]:
    """Run the sweeps of `table` and write their reports; returns (where, text) per report."""
    from repeval.training.results import build_rows, find_runs, write_report
    from repeval.training.sweep import run_sweep
    from repeval.training.sweep_plan import plan_sweep

    specs = sensitivity_specs(dataset, data_dir, smoke, table, pretrained_file)
    plans = {part: plan_sweep(spec) for part, spec in specs.items()}  # all of them before any folder
    out.mkdir(parents=True, exist_ok=True)
    roots = {}
    for part, spec in specs.items():
        run_sweep(spec, out, progress=progress, runs=plans[part])
        roots[part] = out / spec["name"]
    written = []
    if "dummies" in roots:
        paths = [roots["dummies"], roots["tasks"]]
        where, _ = write_report(paths, roots["dummies"] / "report")
        rows, _, _ = build_rows(find_runs(paths))
        lines, text = table4a(rows, datasets.task_names(dataset))
        atomic_write(roots["dummies"] / "table4a.md", lambda f: f.write(text.encode()))
        atomic_json({"repeval_version": __version__, "dataset": dataset, "sweeps": [str(p) for p in paths], "rows": lines,
                     "note": "Delta_MTL over each row's trained tasks, against the single-task runs"},
                    roots["dummies"] / "table4a.json")
        written.append((str(roots["dummies"] / "table4a.md"), text))
    if "swin" in roots:
        where, text = write_report([roots["swin"]], roots["swin"] / "report")
        written.append((str(where), text))
    return written
