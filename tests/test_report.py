"""repeval report: known answers on hand-written run folders (no training)."""

import csv
import io
import json

import numpy as np
import pytest

from repeval.app.cli import main
from repeval.errors import DataNotFoundError, InvalidChoiceError
from repeval.training import run as run_files
from repeval.training.config import TrainConfig
from repeval.training.dgr import DGRConfig
from repeval.training.results import build_rows, find_runs, plot_delta_bars, write_report

TASKS = ("left", "right", "sum")


def fake_run(root, name, accuracy, method="ew", seed=0, dgr=None, epochs=2, finished=2, dataset="multidigits", **method_args):
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = TrainConfig(dataset=dataset, data_dir="UTKFace" if dataset == "utkface" else None, method=method,
                         method_args=method_args, dgr=dgr, seed=seed, epochs=epochs).resolved()
    run_files.write_config(run_dir, config, {})
    lines = [{"epoch": e, "test_accuracy": dict(zip(TASKS, accuracy if e == finished - 1 else (0, 0, 0)))}
             for e in range(finished)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    return run_dir


@pytest.fixture
def runs(tmp_path):
    for task, acc in zip(TASKS, (0.50, 0.80, 0.40)):
        fake_run(tmp_path, f"single-{task}", (acc if task == "left" else 0, acc if task == "right" else 0,
                                              acc if task == "sum" else 0), method="single", task=task)
    fake_run(tmp_path, "ew-0", (0.52, 0.80, 0.44), seed=0)
    fake_run(tmp_path, "ew-1", (0.54, 0.84, 0.40), seed=1)
    fake_run(tmp_path, "ew-dgr", (0.60, 0.78, 0.46), dgr=DGRConfig(lam=0.1))
    fake_run(tmp_path, "pcgrad", (0.55, 0.81, 0.42), method="pcgrad")
    fake_run(tmp_path, "unfinished", (0.99, 0.99, 0.99), method="uw", finished=1)
    return tmp_path


def test_rows_average_seeds_and_delta_uses_the_single_task_runs(runs):
    rows, tasks, baseline = build_rows(find_runs([runs]))
    labels = [r.label for r in rows]
    assert labels == ["single", "ew", "ew + DGR (λ=0.1)", "pcgrad"]  # unfinished uw left out
    ew = rows[1]
    assert ew.mean["left"] == pytest.approx(0.53) and ew.std["left"] == pytest.approx(np.std([0.52, 0.54]))
    expected = ((0.53 - 0.5) / 0.5 + (0.82 - 0.8) / 0.8 + (0.42 - 0.4) / 0.4) / 3
    assert ew.delta == pytest.approx(expected, rel=1e-12)
    assert rows[0].delta == 0 and baseline["accuracy"] == pytest.approx({"left": 0.5, "right": 0.8, "sum": 0.4})


def test_tables_mark_best_bold_and_second_underlined(runs, tmp_path):
    out, markdown = write_report([runs], tmp_path / "report")
    lines = {line.split(" | ")[0].strip("| "): line for line in markdown.splitlines() if line.startswith("| ")}
    assert "**60.00 ± 0.00**" in lines["ew + DGR (λ=0.1)"]  # best left
    assert "<u>55.00 ± 0.00</u>" in lines["pcgrad"]  # second left
    assert "**82.00 ± 2.00**" in lines["ew"]  # best right
    assert "**" not in lines["single"] and "<u>" not in lines["single"]  # the baseline is not ranked
    latex = (out / "table.tex").read_text()
    assert r"\textbf{60.00 $\pm$ 0.00}" in latex and r"\underline{55.00 $\pm$ 0.00}" in latex
    table = list(csv.DictReader(io.StringIO((out / "table.csv").read_text())))
    assert float(table[1]["left_mean"]) == pytest.approx(0.53) and table[2]["dgr_lambda"] == "0.1"
    report = json.loads((out / "report.json").read_text())
    assert report["delta_variant"] == "per-task" and len(report["single_task_baseline"]["runs"]) == 3
    assert (out / "delta_mtl.png").stat().st_size > 0


def test_without_single_runs_there_is_no_delta_column(tmp_path):
    fake_run(tmp_path / "r", "ew", (0.5, 0.5, 0.5))
    out, markdown = write_report([tmp_path / "r"], tmp_path / "out")
    assert "Δ_MTL" not in markdown.splitlines()[0] and "needs `--method single` runs" in markdown
    assert not (out / "delta_mtl.png").exists()


def test_report_cli_and_missing_input(runs, tmp_path, capsys):
    assert main(["report", str(runs), "--out", str(tmp_path / "o"), "--delta", "all-metrics"]) == 0
    assert "| pcgrad |" in capsys.readouterr().out
    with pytest.raises(DataNotFoundError, match="does not exist"):
        find_runs([tmp_path / "missing"])
    assert main(["report", str(runs), "--out", str(tmp_path / "o"), "--delta", "mean"]) == 2
    assert "per-task" in capsys.readouterr().err


def test_runs_of_two_datasets_are_not_mixed(runs, tmp_path):
    fake_run(runs, "utk", (0.5, 0.5, 0.5), dataset="utkface")
    with pytest.raises(InvalidChoiceError, match="these runs mix multidigits, utkface"):
        build_rows(find_runs([runs]))


def test_figure_two_groups_sam_and_pta_under_their_base(runs, tmp_path):
    fake_run(runs, "sam-ew", (0.51, 0.80, 0.40), method="sam", base="ew")
    fake_run(runs, "sam-ew-dgr", (0.9, 0.9, 0.9), method="sam", base="ew", dgr=DGRConfig(lam=0.1))
    rows, _, _ = build_rows(find_runs([runs]))
    assert "ew + SAM" in [r.label for r in rows] and "ew + SAM + DGR (λ=0.1)" in [r.label for r in rows]
    bars = plot_delta_bars(rows, tmp_path / "fig")
    by_label = {r.label: r.delta for r in rows}
    assert bars["ew"] == {"alone": by_label["ew"], "DGR": by_label["ew + DGR (λ=0.1)"], "SAM": by_label["ew + SAM"]}
    assert bars["pcgrad"] == {"alone": by_label["pcgrad"]}  # SAM + DGR stays in the table only
