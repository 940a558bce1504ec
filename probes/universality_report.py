"""`repeval universality`: measure every (encoder, task), write universality.json / .csv and a
table. The measure itself is `repeval.probes.universality.UniversalityMeasure`."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from rich.table import Table
from scipy.stats import spearmanr

from repeval import __version__
from repeval.checkpoint import load_checkpoint
from repeval.errors import InvalidChoiceError
from repeval.models import V1_DUMMY_KEYS
from repeval.probes.embeddings import EmbeddingSet
from repeval.probes.config import UniversalityConfig  # noqa: F401 - re-exported
from repeval.storage import atomic_json, atomic_write

# universality.json's layout: 2 added the held-out reading (rows carry `optimal_reading`); files
# without `format` are 1 (every row the train-fit reading) and load as such.
UNIVERSALITY_FORMAT = 2

CSV_FIELDS = ["checkpoint", "checkpoint_hash", "dataset", "task", "head", "optimal_reading", "n_random", "standardize",
              "l2", "l2_edge", "epochs", "cv_folds", "optimal_loss", "optimal_loss_source", "optimal_train_loss", "optimal_cv_loss",
              "optimal_grad_norm", "optimal_converged", "optimal_accuracy", "separable", "unmatched_loss_mean", "matched_loss_mean",
              "train_matched_loss_mean", "matched_accuracy_mean", "gap_mean", "gap_std", "gap_fold_std", "gap_ci_low",
              "gap_ci_high", "universality", "universality_mean",
              "universality_std", "proxy_mean", "spearman_rho", "spearman_p", "test_optimal_loss", "test_gap_mean",
              "test_gap_std", "test_universality", "stored_dummy_gap_mean", "repeval_version"]


def _checkpoint_heads(ckpt: dict | None, task: str) -> tuple[list, list | None]:
    """The checkpoint's stored dummy heads (one parameter list each) and its trained head: none
    for MTAN, whose heads read each task's attended feature, not the probe features."""
    if ckpt is None or ckpt["model"].get("arch", "split") != "split":
        return [], None
    dummies = ckpt["dummy_heads"].get(task)
    keys = list(V1_DUMMY_KEYS.values())  # a two-layer head's stacked W1, b1, W2, b2
    stored = [] if not dummies else [[dummies[k][j] for k in keys] for j in range(dummies[keys[0]].shape[0])]
    head = ckpt["heads"][task]
    return stored, [head["0.weight"], head["0.bias"], head["2.weight"], head["2.bias"]]


def measure_universality(sets: list[EmbeddingSet], config: UniversalityConfig) -> list[dict]:
    """One row per (encoder, task), with every random head's details under `random_heads`.
    Choices on their grid's edge are recorded per row (`l2_edge`) and warned about once."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="universality: the held-out optimal")
        rows = _measure_rows(sets, config)
    edges = [f"{r['checkpoint']}/{r['task']}" for r in rows if r.get("l2_edge")]
    if edges:
        warnings.warn(f"universality: {len(edges)} of {len(rows)} held-out choices sit on their grid's edge "
                      f"({', '.join(edges[:4])}{', ...' if len(edges) > 4 else ''}; see l2_edge): a wider "
                      "--l2-grid or more --max-epochs may find a better head", stacklevel=2)
    return rows


def _measure_rows(sets: list[EmbeddingSet], config: UniversalityConfig) -> list[dict]:
    rows = []
    for emb in sets:
        path = emb.source.origin.get("checkpoint")
        ckpt = None if path is None else load_checkpoint(path)
        for k, task in enumerate(emb.tasks):
            stored, trained = _checkpoint_heads(ckpt, task.name)
            if config.head == "trained" and trained is None:
                raise InvalidChoiceError(f"--head trained needs a SPLIT repeval checkpoint (whose head reads the probe features); "
                                 f"{emb.source.name!r} has no such head")
            started = time.perf_counter()
            m = config.measure().fit(
                emb.train.features, emb.train.labels[:, k], emb.test.features, emb.test.labels[:, k],
                n_classes=task.num_classes, stored_heads=stored, trained_head=trained)
            mean = lambda key, heads=m.random_: float(np.mean([h[key] for h in heads]))  # noqa: E731
            o = m.optimal_
            rows.append({
                "checkpoint": emb.source.name, "checkpoint_hash": emb.source.key, "dataset": emb.source.dataset,
                "task": task.name, "head": config.head, "optimal_reading": o["reading"], "n_random": config.n_random,
                "standardize": config.standardize, "optimal_loss": o["loss"], "optimal_loss_source": o["loss_source"],
                "optimal_train_loss": o["train_loss"], "optimal_cv_loss": o.get("cv_loss"),
                "optimal_grad_norm": o.get("grad_norm"), "optimal_converged": o.get("converged"),
                "optimal_accuracy": o["accuracy"], "separable": m.separable_, "l2": o["l2"], "l2_edge": o.get("edge"),
                "epochs": o.get("epochs"), "cv_folds": o.get("folds"),
                "unmatched_loss_mean": mean("unmatched_loss"), "train_matched_loss_mean": mean("matched_loss"),
                "matched_loss_mean": mean("heldout_matched_loss" if o["loss_source"] == "test" else "matched_loss"),
                "matched_accuracy_mean": mean("matched_accuracy"),
                "gap_mean": m.gap_mean_, "gap_std": m.gap_std_, "gap_fold_std": m.gap_fold_std_,
                "gap_ci_low": m.gap_ci_[0], "gap_ci_high": m.gap_ci_[1], "universality": m.universality_,
                "universality_mean": m.universality_mean_, "universality_std": m.universality_std_,
                "proxy_mean": mean("proxy"), "spearman_rho": m.spearman_[0], "spearman_p": m.spearman_[1],
                "test_optimal_loss": m.test_["optimal_loss"], "test_gap_mean": m.test_["gap_mean"],
                "test_gap_std": m.test_["gap_std"], "test_universality": m.test_["universality"],
                "stored_dummy_gap_mean": mean("gap", m.stored_) if m.stored_ else None,
                "optimal": m.optimal_, "random_heads": m.random_, "stored_dummy_heads": m.stored_,
                "test_random_heads": m.test_["random"], "seconds": time.perf_counter() - started,
                "repeval_version": __version__,
            })
    return rows


def across_encoders(rows: list[dict]) -> dict:
    """Spearman correlation of mean proxy and mean gap across encoders, per task (>= 3 encoders)."""
    out = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        sel = [r for r in rows if r["task"] == task]
        if len(sel) >= 3:
            rho, p = spearmanr([r["proxy_mean"] for r in sel], [r["gap_mean"] for r in sel])
            out[task] = {"rho": float(rho), "p": float(p), "encoders": len(sel)}
        else:
            out[task] = {"rho": None, "p": None, "encoders": len(sel), "why": "needs at least 3 encoders"}
    return out


def write_universality(rows: list[dict], out_dir: str | os.PathLike, provenance: dict) -> None:
    out_dir = Path(out_dir)
    atomic_json(_jsonable({"format": UNIVERSALITY_FORMAT, "repeval_version": __version__, "provenance": provenance,
                           "across_encoders": across_encoders(rows), "rows": rows}), out_dir / "universality.json")
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(out_dir / "universality.csv", lambda f: f.write(buffer.getvalue().encode()))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    return obj


SEPARABLE_NOTE = (
    "* separable: the train-fit optimum classifies the training split (nearly) perfectly, so its loss is ~0 and the "
    "training gap is just the random heads' loss, which grows with the embedding's scale: read the held-out "
    "reading (--optimal held-out, the default) before reading U as representation quality."
)
EDGE_NOTE = ("! the held-out choice sits on the grid's edge (l2 or epochs): a wider --l2-grid or more --max-epochs "
             "may find a better head")
READING_NOTE = {
    "held-out": "optimal head chosen by {folds}-fold CV, refitted, scored on held-out data; random heads on the same data",
    "train-fit": "optimal head fitted to the training split (Definition 2 as written); gaps on the training split",
}


def universality_table(rows: list[dict]) -> Table:
    reading = rows[0].get("optimal_reading", "train-fit")
    notes = [n for n, on in ((SEPARABLE_NOTE, any(r.get("separable") for r in rows)),
                             (EDGE_NOTE, any(r.get("l2_edge") for r in rows))) if on]
    fixed_l2 = f", optimal head L2 {rows[0]['l2']:g}" if reading == "train-fit" and rows[0].get("l2") else ""
    title = (f"universality ({rows[0]['head']} heads, {rows[0]['n_random']} random draws; "
             f"{READING_NOTE[reading].format(folds=rows[0].get('cv_folds'))}{fixed_l2})")
    table = Table(title=title, caption="\n".join(notes) or None)
    for col in ("encoder", "task", "optimal loss", "l2", "random loss (matched)", "gap [95 % CI]", "U = 1/gap",
                "matched acc", "ρ(proxy, gap)"):
        table.add_column(col, justify="left" if col in ("encoder", "task") else "right",
                         overflow="fold" if col == "encoder" else "ellipsis")
    for r in rows:
        source = r.get("optimal_loss_source", "train")
        l2 = "" if r.get("l2") is None else f"{r['l2']:g}" + (f" ({r['epochs']} ep)" if r.get("epochs") else "")
        ci = f" [{r['gap_ci_low']:.4f}, {r['gap_ci_high']:.4f}]" if r.get("gap_ci_low") is not None else ""
        table.add_row(r["checkpoint"], r["task"],
                      f"{r['optimal_loss']:.4f} ({source})" + (" *" if r.get("separable") else ""),
                      l2 + (" !" if r.get("l2_edge") else ""), f"{r['matched_loss_mean']:.4f}",
                      f"{r['gap_mean']:.4f}{ci}", f"{r['universality']:.4f}", f"{r['matched_accuracy_mean']:.3f}",
                      f"{r['spearman_rho']:+.2f}")
    return table


def read_universality(path: str | os.PathLike) -> dict:
    """A universality.json, any format this version wrote or reads: format 1 files (no `format`
    key; every row the train-fit reading) gain `optimal_reading`; newer formats are refused in one
    line that names them."""
    from repeval.errors import InvalidChoiceError

    data = json.loads(Path(path).read_text())
    version = data.get("format", 1)
    if not isinstance(version, int) or version > UNIVERSALITY_FORMAT:
        raise InvalidChoiceError(f"{path}: universality.json format {version!r} (repeval {data.get('repeval_version')}) "
                                 f"is newer than this repeval reads (formats 1..{UNIVERSALITY_FORMAT}); upgrade repeval")
    if version == 1:
        for row in data.get("rows", []):
            row.setdefault("optimal_reading", "train-fit")
            row.setdefault("optimal_loss_source", "train")
    data["format"] = UNIVERSALITY_FORMAT
    return data


def provenance(sets: list[EmbeddingSet], config: UniversalityConfig) -> dict:
    return {"command": "repeval universality", "config": asdict(config),
            "sources": [{"name": s.source.name, "key": s.source.key, "dataset": s.source.dataset,
                         "dataset_args": s.source.dataset_args, "origin": s.source.origin} for s in sets]}
