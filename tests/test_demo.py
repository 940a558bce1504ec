"""The demo's comparison table, on hand-made results (training the demo is `make demo`'s job)."""

from __future__ import annotations

import pytest

from repeval.app.demo import PROBE_CLASSIFIERS, compare_to_reference


def test_every_quantity_is_compared_seed_by_seed_with_its_direction():
    seeds = (0, 1, 2)
    acc = {"vanilla": [0.80, 0.82, 0.81], "dgr": [0.85, 0.86, 0.86]}  # DGR +0.05, +0.04, +0.05
    gap = {"vanilla": [1.0, 1.1, 1.2], "dgr": [1.1, 1.2, 1.3]}  # DGR's gap larger by 0.1: worse
    histories = {(n, s): [{"test_accuracy": {"t": acc[n][s]}}] for n in acc for s in seeds}
    probes = [{"checkpoint": f"{n}-seed{s}", "task": "t", "classifier": c, "accuracy": 0.5}
              for n in acc for s in seeds for c in PROBE_CLASSIFIERS]
    universality = {"linear": [{"checkpoint": f"{n}-seed{s}", "task": "t", "gap_mean": gap[n][s]}
                               for n in acc for s in seeds]}
    rows = {c["quantity"]: c for c in compare_to_reference("vanilla", histories, probes, universality, ["t"], seeds)}
    assert len(rows) == 1 + len(PROBE_CLASSIFIERS) + 1
    trained = rows["test accuracy (trained head)"]
    assert trained["b_minus_a"]["difference"]["mean"] == pytest.approx(0.14 / 3)
    assert trained["b_minus_a"]["verdict"] == "better" and trained["a_summary"]["n"] == 3
    assert rows["dt probe accuracy"]["b_minus_a"]["verdict"] == "no detectable difference at n = 3"
    train_gap = rows["universality gap, linear heads (held-out)"]
    assert not train_gap["higher_is_better"] and train_gap["b_minus_a"]["verdict"] == "worse"
