"""Which DGR estimator to trust: each finite-difference scheme against the exact gradient.

For each setting and each eps from 1e-1 to 1e-6, in float64 and float32, the cosine and norm
ratio of lambda * dP/dz from each finite-difference scheme ("central", "forward", "authors")
against the exact estimator's (double backward) of the same penalty, on the same z, targets
and dummy heads. Settings:
- classification: 3 UTKFace-sized tasks (7/2/5 classes) on 2048-wide features, two-layer dummy
  heads; and the same with the authors' ReLU on the logits (`--head-relu`);
- segmentation, depth, normals: one task each, DeepLabv3 dummy heads on a 64-channel 9x12
  feature map (NYUv2's aspect), targets at 36x48;
- nyuv2: the three dense tasks together (the authors' scene setting: "authors" moves each set's
  three heads together, so it differs from "forward" only here).
z is post-ReLU (an encoder's output); d = 3 dummies per task; targets random with some ignored
pixels.

    python benchmarks/dgr_estimators.py [--penalty squared|norm] [--eps 1e-1,1e-2,...] [--dtypes float64,float32]
"""

from __future__ import annotations

import argparse
import time

import torch

from repeval.heads import HeadConfig
from repeval.kinds import kind_of
from repeval.models import DummyHeads
from repeval.tasks import TaskSpec
from repeval.training.config import FD_SCHEMES
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer

H, W, MAP = 36, 48, (9, 12)
DENSE = {"segmentation": TaskSpec("seg", 13, kind="segmentation"), "depth": TaskSpec("depth", 1, kind="depth"),
         "normals": TaskSpec("normal", 3, kind="normals")}
UTKFACE = (TaskSpec("age", 7), TaskSpec("gender", 2), TaskSpec("race", 5))


def dense_target(kind: str, b: int, g: torch.Generator) -> torch.Tensor:
    if kind == "segmentation":
        return torch.randint(-1, 13, (b, H, W), generator=g)  # ~7% ignored
    if kind == "depth":
        return (torch.rand(b, 1, H, W, generator=g) * 5 + 0.5) * (torch.rand(b, 1, H, W, generator=g) > 0.1)
    return torch.nn.functional.normalize(torch.randn(b, 3, H, W, generator=g), dim=1)


def setting(name: str, seed: int = 0):
    """(dummy heads per task, z, targets) in float64."""
    g = torch.Generator().manual_seed(seed)
    if name.startswith("classification"):
        config = HeadConfig(hidden=256, logit_relu=name.endswith("relu"))
        heads = [DummyHeads(kind_of(t), 2048, config, count=3, seed=k) for k, t in enumerate(UTKFACE)]
        z = torch.randn(64, 2048, generator=g).relu()
        targets = [torch.randint(0, t.num_classes, (64,), generator=g) for t in UTKFACE]
    else:
        kinds = list(DENSE) if name == "nyuv2" else [name]
        config = HeadConfig(width=64)
        heads = [DummyHeads(kind_of(DENSE[k]), 64, config, count=3, seed=i, map_side=min(MAP)) for i, k in enumerate(kinds)]
        z = torch.randn(2, 64, *MAP, generator=g).relu()
        targets = [dense_target(k, 2, g) for k in kinds]
    return [h.double() for h in heads], z.double(), [t.double() if t.is_floating_point() else t for t in targets]


def cast(heads, z, targets, dtype):
    return ([h.to(dtype) for h in heads], z.to(dtype),
            [t.to(dtype) if t.is_floating_point() else t for t in targets])


def compare(name: str, penalty: str, eps_grid: list[float], dtypes: list[torch.dtype]) -> list[dict]:
    base = setting(name)
    rows = []
    for dtype in dtypes:
        heads, z, targets = cast(*base, dtype)
        exact, _ = DummyGradientRegularizer(heads, DGRConfig(lam=1.0, penalty=penalty, dummies=3))(z, targets)
        exact = exact.double()
        for scheme in FD_SCHEMES:
            for eps in eps_grid:
                config = DGRConfig(lam=1.0, penalty=penalty, dummies=3, estimator="finite-diff", fd_scheme=scheme, eps=eps)
                fd, _ = DummyGradientRegularizer(heads, config)(z, targets)
                fd = fd.double()
                cosine = float(torch.nn.functional.cosine_similarity(fd.flatten(), exact.flatten(), dim=0))
                rows.append({"setting": name, "dtype": str(dtype).removeprefix("torch."), "scheme": scheme, "eps": eps,
                             "cosine": cosine, "ratio": float(fd.norm() / exact.norm())})
    return rows


def table(rows: list[dict], eps_grid: list[float]) -> str:
    head = "| setting | dtype | scheme | " + " | ".join(f"ε={e:g}" for e in eps_grid) + " |"
    lines = [head, "|" + "---|" * (3 + len(eps_grid))]
    keys = dict.fromkeys((r["setting"], r["dtype"], r["scheme"]) for r in rows)
    for key in keys:
        cells = {r["eps"]: f"{r['cosine']:.3f} / {r['ratio']:.2f}" for r in rows if (r["setting"], r["dtype"], r["scheme"]) == key}
        lines.append(f"| {' | '.join(key)} | " + " | ".join(cells[e] for e in eps_grid) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--penalty", default="squared", choices=["squared", "norm"])
    parser.add_argument("--eps", default="1e-1,1e-2,1e-3,1e-4,1e-5,1e-6")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--settings", default="classification,classification-relu,segmentation,depth,normals,nyuv2")
    args = parser.parse_args()
    eps_grid = [float(e) for e in args.eps.split(",")]
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    for name in args.settings.split(","):
        started = time.perf_counter()
        rows += compare(name, args.penalty, eps_grid, dtypes)
        print(f"# {name}: {time.perf_counter() - started:.1f} s", flush=True)
    print(f"\npenalty {args.penalty!r}; each cell: cosine / norm ratio of the finite-difference estimate against the exact one\n")
    print(table(rows, eps_grid))
    authors = next(r for r in rows if (r["setting"], r["dtype"], r["scheme"], r["eps"]) == ("nyuv2", "float32", "authors", 1e-3)) \
        if any(r["setting"] == "nyuv2" and r["dtype"] == "float32" for r in rows) else None
    if authors and args.penalty == "squared":
        print(f"\nthe authors' scene setting (nyuv2, squared, 'authors' scheme, eps 1e-3, float32): cosine "
              f"{authors['cosine']:.3f}, norm ratio {authors['ratio']:.2f} against the exact gradient")


if __name__ == "__main__":
    main()
