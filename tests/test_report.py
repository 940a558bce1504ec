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
    assert ew.mean["left"] == pytest.approx(0.53) and ew.std["left"] == pytest.approx(np.std([0.52, 0.54], ddof=1))
    # 95 % t-interval with n = 2: t(0.975, 1) = 12.7062047, std / sqrt(2) = 0.01.
    assert (ew.summary["left"].ci_low, ew.summary["left"].ci_high) == pytest.approx((0.53 - 0.127062047, 0.53 + 0.127062047))
    assert rows[2].std["left"] is None and rows[2].summary["left"].n == 1  # one seed: no spread claimed
    expected = ((0.53 - 0.5) / 0.5 + (0.82 - 0.8) / 0.8 + (0.42 - 0.4) / 0.4) / 3
    assert ew.delta == pytest.approx(expected, rel=1e-12)
    assert rows[0].delta == 0 and baseline["means"] == pytest.approx({"left": 0.5, "right": 0.8, "sum": 0.4})


def test_tables_mark_best_bold_and_second_underlined(runs, tmp_path):
    out, markdown = write_report([runs], tmp_path / "report")
    lines = {line.split(" | ")[0].strip("| "): line for line in markdown.splitlines() if line.startswith("| ")}
    assert "**60.00**" in lines["ew + DGR (λ=0.1)"]  # best left (one seed: no ± shown)
    assert "<u>55.00</u>" in lines["pcgrad"]  # second left
    assert "**82.00 ± 2.83 [56.59, 107.41]**" in lines["ew"]  # best right: mean ± sample std [95 % CI]
    assert "**" not in lines["single"] and "<u>" not in lines["single"]  # the baseline is not ranked
    latex = (out / "table.tex").read_text()
    assert r"\textbf{60.00}" in latex and r"\underline{55.00}" in latex
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


def seeded_group(root, name, values, **kw):
    for seed, acc in enumerate(values):
        fake_run(root / name, f"seed{seed}", acc, seed=seed, **kw)
    return root / name


def test_report_and_compare_pair_dgr_with_its_method_seed_by_seed(tmp_path, capsys):
    plain = seeded_group(tmp_path, "ew", [(0.50, 0.80, 0.40), (0.52, 0.81, 0.42), (0.54, 0.82, 0.41)])
    dgr = seeded_group(tmp_path, "dgr", [(0.53, 0.70, 0.40), (0.55, 0.90, 0.42), (0.57, 0.80, 0.41)],
                       dgr=DGRConfig(lam=0.1))
    out, text = write_report([tmp_path], tmp_path / "report")
    pairs = {c["task"]: c for c in json.loads((out / "report.json").read_text())["paired_comparisons"]}
    # left: differences 0.03, 0.03, 0.03 -> interval [0.03, 0.03] excludes 0: better.
    assert pairs["left"]["difference"]["mean"] == pytest.approx(0.03) and pairs["left"]["verdict"] == "better"
    # right: -0.10, +0.09, -0.02 -> mean -0.01, sample std 0.09539, half-width 4.30265 * 0.09539 / sqrt(3)
    half = 4.302652730 * np.std([-0.10, 0.09, -0.02], ddof=1) / np.sqrt(3)
    assert pairs["right"]["difference"]["ci_high"] == pytest.approx(-0.01 + half)
    assert pairs["right"]["verdict"] == "no detectable difference at n = 3"
    assert pairs["sum"]["verdict"] == "no detectable difference at n = 3"  # identical: interval [0, 0]
    assert "| ew + DGR (λ=0.1) vs ew | left | +3.00 [+3.00, +3.00] | 3 | better |" in text

    assert main(["compare", "--a", str(plain), "--b", str(dgr), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "| ew + DGR (λ=0.1) vs ew | left | +3.00 [+3.00, +3.00] | 3 | better |" in printed
    swapped = json.loads((tmp_path / "cmp" / "compare.json").read_text())["comparisons"]
    assert [c["verdict"] for c in swapped] == ["better", "no detectable difference at n = 3",
                                               "no detectable difference at n = 3"]
    assert main(["compare", "--a", str(dgr), "--b", str(plain)]) == 0
    assert "| ew vs ew + DGR (λ=0.1) | left | -3.00 [-3.00, -3.00] | 3 | worse |" in capsys.readouterr().out


def test_compare_refuses_mixed_groups_and_unshared_seeds(tmp_path, capsys):
    plain = seeded_group(tmp_path, "ew", [(0.5, 0.5, 0.5), (0.6, 0.6, 0.6)])
    fake_run(tmp_path / "mixed", "ew", (0.5, 0.5, 0.5))
    fake_run(tmp_path / "mixed", "pcgrad", (0.5, 0.5, 0.5), method="pcgrad")
    assert main(["compare", "--a", str(tmp_path / "mixed"), "--b", str(plain)]) == 2
    assert "group A mixes 2 configurations" in capsys.readouterr().err
    fake_run(tmp_path / "late", "seed7", (0.5, 0.5, 0.5), seed=7, method="uw")
    assert main(["compare", "--a", str(plain), "--b", str(tmp_path / "late")]) == 2
    assert "share no training seed (A: [0, 1], B: [7])" in capsys.readouterr().err


def dense_run(root, name, seg, depth, normal, method="ew", seed=0, dgr=None, **method_args):
    run_dir = root / name
    run_dir.mkdir(parents=True)
    config = TrainConfig(dataset="scenes", method=method, method_args=method_args, dgr=dgr, seed=seed, epochs=1).resolved()
    run_files.write_config(run_dir, config, {})
    test = {"seg": {"miou": seg, "pixel_acc": 0.9}, "depth": {"abs_err": depth, "rel_err": 0.1},
            "normal": {"mean_angle": normal, "median_angle": 10.0, "within_11.25": 0.5, "within_22.5": 0.7, "within_30": 0.8}}
    (run_dir / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "test": test}) + "\n")
    return run_dir


def test_dense_reports_sign_each_metric_by_its_direction(tmp_path):
    dense_run(tmp_path, "ew", 0.46, 0.41, 24.0)
    dense_run(tmp_path, "ew-dgr", 0.47, 0.40, 23.0, dgr=DGRConfig(lam=0.1))
    dense_run(tmp_path, "pcgrad", 0.45, 0.45, 25.0, method="pcgrad")
    rows, columns, baseline = build_rows(find_runs([tmp_path]), baseline_name="autolambda-nyuv2")
    assert "depth abs_err" in columns and "normal mean_angle" in columns and "seg miou" in columns
    ew = next(r for r in rows if r.label == "ew")
    # The DGR paper's Delta_MTL: mean of +(mIoU - 43.37)/43.37, -(abs - 0.5224)/0.5224, -(angle - 22.40)/22.40.
    expected = ((0.46 - 0.4337) / 0.4337 - (0.41 - 0.5224) / 0.5224 - (24.0 - 22.40) / 22.40) / 3
    assert ew.delta == pytest.approx(expected, rel=1e-12)
    out, table = write_report([tmp_path], tmp_path / "report", baseline="autolambda-nyuv2")
    line = next(x for x in table.splitlines() if x.startswith("| ew + DGR"))
    assert "**0.4000**" in line and "**23.0000**" in line  # lowest error and angle are best
    assert "depth abs_err |" in table and "seg miou (%)" in table
    with pytest.raises(InvalidChoiceError, match="baseline 'autolambda-cityscapes' needs the columns part_seg miou, disp abs_err"):
        build_rows(find_runs([tmp_path]), baseline_name="autolambda-cityscapes")


def test_delta_header_states_its_direction_and_segnet_bases_get_the_papers_sign_note(tmp_path, capsys):
    """The Nash-MTL/CAGrad papers print -Delta_MTL: a report against their SegNet bases says so,
    in table.md and on the command line; other bases do not get the note."""
    from repeval.app.cli import main

    dense_run(tmp_path / "runs", "ew", 0.46, 0.41, 24.0)
    ew = find_runs([tmp_path / "runs"])
    rows, _, _ = build_rows(ew, variant="all-metrics", baseline_name="segnet-nyuv2")
    _, table = write_report([tmp_path / "runs"], tmp_path / "segnet", variant="all-metrics", baseline="segnet-nyuv2")
    assert "Δ_MTL (%, + = better)" in table.splitlines()[0]
    notes = (tmp_path / "segnet" / "table.md").read_text()
    assert "Nash-MTL/CAGrad papers print Δm = −Δ_MTL" in notes
    assert f"{100 * rows[0].delta:+.2f}" in table  # the column keeps repeval's sign
    write_report([tmp_path / "runs"], tmp_path / "auto", baseline="autolambda-nyuv2")
    assert "Δm" not in (tmp_path / "auto" / "table.md").read_text()
    code = main(["report", str(tmp_path / "runs"), "--delta", "all-metrics", "--baseline", "segnet-nyuv2",
                 "--out", str(tmp_path / "cli")])
    assert code == 0 and "Nash-MTL/CAGrad papers print Δm = −Δ_MTL" in capsys.readouterr().out


def test_best_on_test_takes_each_metric_by_its_direction_and_says_so(tmp_path):
    run = dense_run(tmp_path, "ew", 0.40, 0.30, 20.0)
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    later = json.loads(json.dumps(lines[0]))
    later["epoch"] = 1
    later["test"]["seg"]["miou"], later["test"]["depth"]["abs_err"], later["test"]["normal"]["mean_angle"] = 0.35, 0.25, 22.0
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in (lines[0], later)))
    config = json.loads((run / "config.json").read_text())
    config["config"]["epochs"] = 2
    (run / "config.json").write_text(json.dumps(config))
    final = find_runs([tmp_path])[0].metrics
    best = find_runs([tmp_path], "best-on-test")[0].metrics
    assert (final["seg"]["miou"], final["depth"]["abs_err"], final["normal"]["mean_angle"]) == (0.35, 0.25, 22.0)
    assert (best["seg"]["miou"], best["depth"]["abs_err"], best["normal"]["mean_angle"]) == (0.40, 0.25, 20.0)
    _, table = write_report([tmp_path], tmp_path / "report", selection="best-on-test")
    assert "TEST-SET SELECTION" in table
    assert json.loads((tmp_path / "report" / "report.json").read_text())["selection"] == "best-on-test"
