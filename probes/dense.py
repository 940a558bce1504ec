"""Probes and universality for dense checkpoints (segmentation, depth, disparity, normals).

The DT/SVM/kNN suite classifies one embedding per image; dense tasks label every pixel. Here the
representation of a pixel is the encoder's feature map upsampled to the input (bilinear,
`align_corners=True`, as the heads' outputs are) and read at that pixel. `pixels_per_image`
positions are drawn per image (seeded, uniformly; default 64, so a 1,024-image split gives
65,536 pixels) and every task's target is read at the same positions; pixels invalid for a task
(its ignore rule) are left out of that task.

- Probe ("pixel-linear"): segmentation gets multinomial logistic regression (scikit-learn, on
  standardised features); regression kinds get the least-squares linear head. Both are scored
  on the test split's pixels with the task kind's own metrics (mIoU, abs error, angles...).
- Universality: segmentation is per-pixel classification, measured by `UniversalityMeasure`
  (linear heads, class-permutation matching on the confusion of all sampled valid pixels).
  Regression kinds have no class permutation: the optimal linear head is the least-squares fit,
  sigma is the identity, random heads are `nn.Linear` at PyTorch's default initialisation (as
  DGR's dummies), and the gap is the random heads' primary metric minus the optimal head's (for
  lower-is-better metrics; the reverse for higher), U = 1 / gap. The optimum is for the squared
  error, which is what a closed form gives; the gap is reported on the kind's metric."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from repeval import __version__, datasets
from repeval.checkpoint import load_checkpoint, model_from_checkpoint
from repeval.datasets import InputNormalizer, InputSpec, collate_batch
from repeval.kinds import kind_of
from repeval.kinds.base import TaskKind
from repeval.probes.universality import UniversalityMeasure

PIXELS_PER_IMAGE = 64


def is_dense_checkpoint(path) -> bool:
    return bool(load_checkpoint(path)["model"].get("dense", False))


@dataclass
class PixelSet:
    """Features `[M, C]` of sampled pixels, each task's target at them (`[M]` class indices or
    `[M, channels]` values) and the image each pixel came from (`[M]`: CV folds group by it)."""

    features: np.ndarray
    targets: list[np.ndarray]
    images: np.ndarray | None = None


@torch.inference_mode()
def sample_pixels(encoder: torch.nn.Module, dataset, spec: InputSpec, pixels_per_image: int = PIXELS_PER_IMAGE,
                  seed: int = 0, device: str | torch.device = "cpu", batch_size: int = 32) -> PixelSet:
    device = torch.device(device)
    encoder.eval().to(device)
    normalize = InputNormalizer(spec, device)
    g = torch.Generator().manual_seed(seed)
    features, targets = [], None
    for images, ys in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_batch):
        z = encoder(normalize(images.to(device))).float()
        h, w = ys[0].shape[-2:]
        index = torch.randint(h * w, (len(images), pixels_per_image), generator=g).to(device)
        up = F.interpolate(z, size=(h, w), mode="bilinear", align_corners=True).flatten(2)  # [B, C, HW]
        features.append(torch.gather(up, 2, index[:, None].expand(-1, up.shape[1], -1)).transpose(1, 2).reshape(-1, up.shape[1]).cpu())
        picked = []
        for y in ys:
            y = y.to(device)
            flat = y.flatten(-2) if y.dim() == 3 else y.flatten(2)  # [B, HW] or [B, ch, HW]
            if flat.dim() == 2:
                picked.append(torch.gather(flat, 1, index).reshape(-1).cpu())
            else:
                picked.append(torch.gather(flat, 2, index[:, None].expand(-1, flat.shape[1], -1)).transpose(1, 2)
                              .reshape(-1, flat.shape[1]).cpu())
        targets = [[p] for p in picked] if targets is None else [t + [p] for t, p in zip(targets, picked)]
    features = torch.cat(features).numpy()
    images = np.repeat(np.arange(len(features) // pixels_per_image), pixels_per_image)
    return PixelSet(features, [torch.cat(t).numpy() for t in targets], images)


def _as_image(values: np.ndarray) -> torch.Tensor:
    """`[M]` or `[M, ch]` pixel values as a one-image map `[1, (ch,) M, 1]` for the kinds' metrics."""
    t = torch.from_numpy(np.ascontiguousarray(values))
    return t.view(1, len(t), 1) if t.dim() == 1 else t.T.reshape(1, t.shape[1], len(t), 1)


def kind_metrics(kind: TaskKind, prediction: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """The kind's metrics of per-pixel predictions (`[M, outputs]` scores or values)."""
    metric = kind.metric()
    metric.update(kind.predict(_as_image(prediction.astype(np.float32))), _as_image(target))
    return metric.compute()


def valid_pixels(kind: TaskKind, target: np.ndarray) -> np.ndarray:
    """Which sampled pixels a task counts (its kind's ignore rule)."""
    return kind.valid(_as_image(target)).flatten().numpy()


def least_squares_head(X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The linear head (W `[C, out]`, b `[out]`) minimising the squared error, in closed form."""
    A = np.hstack([X.astype(np.float64), np.ones((len(X), 1))])
    solution, *_ = np.linalg.lstsq(A, Y.astype(np.float64).reshape(len(Y), -1), rcond=None)
    return solution[:-1], solution[-1]


def _fit_classifier(X, y, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=300, random_state=seed)).fit(X, y)


def pixel_probe(kind: TaskKind, train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], seed: int = 0) -> dict:
    """The per-pixel linear probe of one task: fitted on `train` (features, targets), scored on
    `test` with the kind's metrics."""
    (Xtr, ytr), (Xte, yte) = train, test
    if kind.target_is_index:
        clf = _fit_classifier(Xtr, ytr, seed)
        scores = np.zeros((len(Xte), kind.outputs), dtype=np.float32)
        scores[:, clf.classes_] = clf.predict_proba(Xte)
        return kind_metrics(kind, scores, yte)
    W, b = least_squares_head(Xtr, ytr)
    return kind_metrics(kind, Xte @ W + b, yte)


RIDGE_GRID = (1e3, 1e2, 1e1, 1e0, 1e-1, 1e-2)  # ridge penalties (sum of squares + alpha ||W||^2, standardised)


def ridge_heldout_head(X: np.ndarray, Y: np.ndarray, groups: np.ndarray, cv: int = 5, seed: int = 0,
                       grid: tuple[float, ...] = RIDGE_GRID) -> tuple[np.ndarray, np.ndarray, dict]:
    """The held-out optimal linear head of a regression kind: ridge on standardised features, its
    penalty chosen by k-fold CV grouped by image (scikit-learn's GridSearchCV over GroupKFold),
    refitted on all pixels and returned as (W `[C, out]`, b `[out]`) on the raw features."""
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, GroupKFold

    mean, scale = X.mean(0), X.std(0) + 1e-12
    Xs = (X.astype(np.float64) - mean) / scale
    Y = Y.astype(np.float64).reshape(len(Y), -1)
    search = GridSearchCV(Ridge(), {"alpha": list(grid)}, cv=GroupKFold(cv, shuffle=True, random_state=seed), scoring="neg_mean_squared_error").fit(Xs, Y, groups=groups)
    ridge = search.best_estimator_
    outputs = Y.shape[1]  # scikit-learn drops the target axis of a one-column Y
    W = np.reshape(ridge.coef_, (outputs, -1)).T / scale[:, None]
    b = np.reshape(ridge.intercept_, (outputs,)) - mean @ W
    alpha = float(search.best_params_["alpha"])
    edge = "strongest" if alpha == max(grid) else "weakest" if alpha == min(grid) else None
    return W, b, {"l2": alpha, "edge": edge, "cv_mse": dict(zip(map(float, grid), (-search.cv_results_["mean_test_score"]).tolist()))}


def regression_universality(kind: TaskKind, train, test, n_random: int = 10, seed: int = 0, optimal: str = "held-out",
                            groups: np.ndarray | None = None, cv: int = 5) -> dict:
    """Gap between random linear heads and the optimal one on the kind's primary metric, sigma =
    identity; on the training pixels and, with the same heads, the test pixels. The optimal head
    is the least-squares fit (train-fit) or the held-out ridge head (`ridge_heldout_head`)."""
    (Xtr, ytr), (Xte, yte) = train, test
    choice = None
    if optimal == "held-out":
        W, b, choice = ridge_heldout_head(Xtr, ytr, groups, cv, seed)
    else:
        W, b = least_squares_head(Xtr, ytr)
    sign = 1.0 if kind.directions[kind.primary] == "lower" else -1.0
    out = {}
    for split, X, y in (("train", Xtr, ytr), ("test", Xte, yte)):
        optimal = kind_metrics(kind, X @ W + b, y)[kind.primary]
        randoms = []
        for j in range(n_random):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed + j)
                head = torch.nn.Linear(X.shape[1], kind.outputs).double()
            with torch.no_grad():
                pred = head(torch.from_numpy(X.astype(np.float64))).numpy()
            randoms.append(kind_metrics(kind, pred, y)[kind.primary])
        gaps = sign * (np.asarray(randoms) - optimal)
        out[split] = {"optimal": optimal, "random_mean": float(np.mean(randoms)), "gap_mean": float(gaps.mean()),
                      "gap_std": float(gaps.std()), "universality": float(1 / gaps.mean()) if gaps.mean() > 0 else None}
    out["choice"] = choice
    return out


def dense_reports(paths: list, pixels_per_image: int = PIXELS_PER_IMAGE, seed: int = 0, universality: bool = False,
                  n_random: int = 10, device: str = "cpu", optimal: str = "held-out",
                  cv: int = 5) -> tuple[list[dict], list[dict]]:
    """Probe rows and (with `universality`) universality rows of dense checkpoints, one per
    (checkpoint, task). Universality's CV folds group pixels by image. `gap_mean` is the
    reading's headline gap (held-out: on the test pixels; train-fit: on the training pixels)."""
    probe_rows, universality_rows = [], []
    for path in paths:
        ckpt = load_checkpoint(path)
        encoder = model_from_checkpoint(ckpt, path).probe_encoder()
        bundle = datasets.build(ckpt["dataset"]["name"], **ckpt["dataset"]["args"])
        split = {name: sample_pixels(encoder, getattr(bundle, name), bundle.input, pixels_per_image, seed, device)
                 for name in ("train", "test")}
        for k, task in enumerate(bundle.tasks):
            kind = kind_of(task)
            parts, images = {}, {}
            for name, pixels in split.items():
                keep = valid_pixels(kind, pixels.targets[k])
                parts[name] = (pixels.features[keep], pixels.targets[k][keep])
                images[name] = pixels.images[keep]
            common = {"checkpoint": str(path), "dataset": bundle.name, "task": task.name, "kind": task.kind,
                      "pixels_per_image": pixels_per_image, "train_pixels": len(parts["train"][0]),
                      "test_pixels": len(parts["test"][0]), "seed": seed, "repeval_version": __version__}
            probe_rows.append({**common, "probe": "pixel-linear", **pixel_probe(kind, parts["train"], parts["test"], seed)})
            if not universality:
                continue
            common["optimal_reading"] = optimal
            if kind.target_is_index:
                m = UniversalityMeasure(n_random=n_random, random_state=seed, optimal=optimal, cv=cv).fit(
                    parts["train"][0], parts["train"][1], parts["test"][0], parts["test"][1], n_classes=kind.outputs,
                    groups=images["train"])
                universality_rows.append({**common, "head": "linear", "metric": "cross-entropy (matched)",
                                          "optimal": m.optimal_["loss"], "optimal_loss_source": m.optimal_["loss_source"],
                                          "l2": m.optimal_["l2"], "l2_edge": m.optimal_.get("edge"),
                                          "gap_mean": m.gap_mean_, "gap_std": m.gap_std_, "gap_ci_low": m.gap_ci_[0],
                                          "gap_ci_high": m.gap_ci_[1], "universality": m.universality_,
                                          "test_gap_mean": m.test_["gap_mean"], "test_universality": m.test_["universality"]})
            else:
                r = regression_universality(kind, parts["train"], parts["test"], n_random, seed, optimal, images["train"], cv)
                headline = r["test"] if optimal == "held-out" else r["train"]
                choice = r["choice"] or {}
                universality_rows.append({**common, "head": "linear", "metric": kind.primary,
                                          "optimal": headline["optimal"], "random_mean": headline["random_mean"],
                                          "optimal_loss_source": "test" if optimal == "held-out" else "train",
                                          "l2": choice.get("l2"), "l2_edge": choice.get("edge"), "cv_mse": choice.get("cv_mse"),
                                          "gap_mean": headline["gap_mean"], "gap_std": headline["gap_std"],
                                          "universality": headline["universality"], "test_gap_mean": r["test"]["gap_mean"],
                                          "test_universality": r["test"]["universality"]})
    return probe_rows, universality_rows


def write_dense_probe(paths: list, out_dir, universality: bool = False, n_random: int = 10, seed: int = 0,
                      pixels_per_image: int = PIXELS_PER_IMAGE, device: str = "cpu", optimal: str = "held-out",
                      cv: int = 5) -> tuple[list[dict], list[dict]]:
    """`dense_reports`, written as probe.json (and universality.json) under `out_dir`."""
    from pathlib import Path

    from repeval.storage import atomic_json

    out_dir = Path(out_dir)
    rows, urows = dense_reports(paths, pixels_per_image, seed, universality, n_random, device, optimal, cv)
    out_dir.mkdir(parents=True, exist_ok=True)  # after the measures: a refused checkpoint leaves no folder
    provenance = {"command": "repeval probe (dense checkpoints: per-pixel linear probe)", "pixels_per_image": pixels_per_image,
                  "seed": seed, "checkpoints": [str(p) for p in paths], "repeval_version": __version__}
    atomic_json({"repeval_version": __version__, "provenance": provenance, "rows": rows}, out_dir / "probe.json")
    if universality:
        atomic_json({"format": 2, "repeval_version": __version__,
                     "provenance": {**provenance, "n_random": n_random, "optimal": optimal, "cv": cv}, "rows": urows},
                    out_dir / "universality.json")
    return rows, urows


def describe(rows: list[dict]) -> str:
    """One line per (checkpoint, task): the probe's metrics."""
    lines = []
    for r in rows:
        skip = {"checkpoint", "dataset", "task", "kind", "pixels_per_image", "train_pixels", "test_pixels", "seed",
                "repeval_version", "probe", "head", "metric"}
        values = "  ".join(f"{k}={v:.4g}" for k, v in r.items() if k not in skip and isinstance(v, float))
        lines.append(f"{r['checkpoint']}  {r['task']} ({r['kind']}, {r['test_pixels']} test pixels)  {values}")
    return "\n".join(lines)
