"""`benchmarks/gpu_check.py --device cpu --quick` end to end, so the script a GPU machine runs first
cannot rot while no GPU is lent: every check runs and passes, and its JSON says how it was made."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_gpu_check_runs_every_check_on_cpu(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as when run as a script: its helpers sit beside it
    spec = importlib.util.spec_from_file_location("gpu_check", BENCHMARKS / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    out = tmp_path / "gpu_check.json"
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--device", "cpu", "--quick", "--out", str(out)])
    assert gpu_check.main() == 0
    report = json.loads(out.read_text())
    assert report["execution"] == {"device": "cpu", "precision": "fp32", "channels_last": False, "num_workers": 0,
                                   "data_on_device": False}
    assert {name: check["status"] for name, check in report["checks"].items()} == {
        "tests": "skipped on CPU (the CPU suite runs them)", "bf16": "passed", "steps": "passed", "data": "passed"}
    variants = report["checks"]["steps"]["variants"]
    assert list(variants) == list(gpu_check.VARIANTS) and variants["vanilla"]["vs_vanilla"] == 1.0
    assert all(v["seconds"] > 0 for v in variants.values()) and variants["dgr exact d=3"]["overhead_vs_floor"] > 0
    assert report["checks"]["bf16"]["grad_cosine"] >= gpu_check.GRAD_COSINE
    assert set(report["checks"]["data"]["loader_images_per_second"]) == {"0", "1"}
    assert report["checks"]["data"]["on_device_images_per_second"] > 0
    assert "dgr exact d=3" in capsys.readouterr().out
