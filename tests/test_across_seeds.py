"""Probe and universality results summarised over training seeds, grouped by configuration."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from repeval.probes.across_seeds import across_training_seeds
from repeval.probes.embeddings import EmbeddingSet, training_seed_group
from repeval.training.config import DGRConfig, TrainConfig


def test_checkpoints_differing_only_in_seed_share_a_configuration():
    a, b = (training_seed_group(TrainConfig(seed=s, out_dir=f"runs{s}").resolved().to_dict()) for s in (0, 7))
    other = training_seed_group(TrainConfig(dgr=DGRConfig(lam=0.1)).resolved().to_dict())
    assert a["configuration"] == b["configuration"] and (a["training_seed"], b["training_seed"]) == (0, 7)
    assert other["configuration"] != a["configuration"] and other["configuration"].startswith("ew+dgr-0.1 [")


def test_probe_accuracy_is_summarised_over_training_seeds_after_averaging_probe_seeds():
    base = EmbeddingSet.from_arrays("x", np.zeros((4, 2)), [0, 1, 0, 1], np.zeros((2, 2)), [0, 1])

    def encoder(name, configuration, seed):
        return replace(base, source=replace(base.source, name=name,
                                            origin={"configuration": configuration, "training_seed": seed}))

    sets = [encoder("r0", "ew [1]", 0), encoder("r1", "ew [1]", 1), encoder("r2", "ew [1]", 2), encoder("d0", "dgr [2]", 0)]
    rows = [{"checkpoint": c, "task": "t", "classifier": "dt", "seed": p, "accuracy": v}
            for c, p, v in [("r0", 0, 0.8), ("r0", 1, 0.9), ("r1", 0, 0.7), ("r2", 0, 0.75), ("d0", 0, 0.99)]]
    (entry,) = across_training_seeds(rows, sets, "accuracy", ("task", "classifier"))  # dgr has one seed: left out
    per_checkpoint = [0.85, 0.7, 0.75]
    half = 4.302652729911275 * np.std(per_checkpoint, ddof=1) / np.sqrt(3)
    assert (entry["configuration"], entry["task"], entry["classifier"], entry["n"]) == ("ew [1]", "t", "dt", 3)
    assert entry["mean"] == pytest.approx(np.mean(per_checkpoint))
    assert entry["ci_high"] == pytest.approx(np.mean(per_checkpoint) + half)
    assert entry["training_seeds"] == [0, 1, 2] and entry["checkpoints"] == ["r0", "r1", "r2"]
