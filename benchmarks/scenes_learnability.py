"""Is `scenes` learnable but not saturated? EW with the default settings against trivial predictors.

Trivial predictors, fitted on the training split and scored on the test split with the task
kinds' own metrics: the majority class, the mean depth and the mean normal (constants), and the
per-pixel versions (each pixel's majority class, mean depth, mean normal: the position prior).
Then `repeval train scenes` (EW, defaults; add --dgr and other train options after `--`) and its
final test metrics.

    python benchmarks/scenes_learnability.py [-- --dgr --method pcgrad]
"""

from __future__ import annotations

import sys
import tempfile

import torch
import torch.nn.functional as F

from repeval import datasets
from repeval.kinds import kind_of


def score(kind, pred, target) -> dict:
    metric = kind.metric()
    metric.update(pred, target)
    return metric.compute()


def trivial_predictors(bundle) -> dict[str, list[dict]]:
    _, (seg, depth, normal) = bundle.train.__getitems__(list(range(len(bundle.train))))
    _, (tseg, tdepth, tnormal) = bundle.test.__getitems__(list(range(len(bundle.test))))
    kinds = [kind_of(t) for t in bundle.tasks]
    classes = bundle.tasks[0].num_classes
    n = len(tseg)
    onehot = F.one_hot(seg.clamp_min(0), classes).permute(0, 3, 1, 2).float() * (seg >= 0).unsqueeze(1)
    majority = torch.zeros(1, classes, 1, 1)
    majority[0, onehot.sum((0, 2, 3)).argmax()] = 1
    valid = (depth != 0).float()
    pixel_depth = (depth * valid).sum(0, keepdim=True) / valid.sum(0, keepdim=True).clamp_min(1)
    mean_normal = F.normalize(normal.sum((0, 2, 3)), dim=0).view(1, 3, 1, 1)
    pixel_normal = F.normalize(normal.sum(0, keepdim=True), dim=1)
    size = tseg.shape[-2:]
    return {
        "constant (majority class, mean depth, mean normal)": [
            score(kinds[0], majority.expand(n, -1, *size), tseg),
            score(kinds[1], torch.full_like(tdepth, float(depth[depth != 0].mean())), tdepth),
            score(kinds[2], mean_normal.expand(n, -1, *size).contiguous(), tnormal)],
        "per-pixel prior (each pixel's majority, mean depth, mean normal)": [
            score(kinds[0], onehot.sum(0, keepdim=True).expand(n, -1, -1, -1), tseg),
            score(kinds[1], pixel_depth.expand(n, -1, -1, -1), tdepth),
            score(kinds[2], pixel_normal.expand(n, -1, -1, -1).contiguous(), tnormal)],
    }


def main() -> None:
    extra = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    bundle = datasets.build("scenes")
    rows = trivial_predictors(bundle)
    from repeval.app.cli import main as cli
    from repeval.training.run import read_metrics

    with tempfile.TemporaryDirectory() as out:
        assert cli(["train", "scenes", "--out", out, "--no-progress", *extra]) == 0
        from pathlib import Path

        run = next(Path(out).iterdir())
        test = read_metrics(run)[-1]["test"]
        rows[f"repeval train scenes {' '.join(extra) or '(EW, defaults)'}"] = [test[t.name] for t in bundle.tasks]
    print(f"{'predictor':70s} {'seg mIoU':>9s} {'pix acc':>8s} {'depth abs':>10s} {'depth rel':>10s} {'normal mean':>12s} {'median':>7s} {'<11.25':>7s}")
    for name, (s, d, nm) in rows.items():
        print(f"{name:70s} {s['miou']:9.4f} {s['pixel_acc']:8.4f} {d['abs_err']:10.4f} {d['rel_err']:10.4f} "
              f"{nm['mean_angle']:12.2f} {nm['median_angle']:7.2f} {nm['within_11.25']:7.3f}")


if __name__ == "__main__":
    main()
