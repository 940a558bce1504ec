"""Embedding extraction throughput vs the raw model's inference on the same batches.

raw:     encoder(x) over pre-normalised float batches already in memory (no data pipeline)
extract: repeval.probes.embeddings.embed over the uint8 dataset (batching, normalisation, copy out)
Goal: extract >= 0.9x raw.

    python benchmarks/extraction_throughput.py [--backbone resnet50] [--n 1024] [--size 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from repeval.datasets import ArrayDataset, InputSpec, normalize_batch
from repeval.datasets.base import IMAGENET_MEAN, IMAGENET_STD
from repeval.models import build_encoder
from repeval.probes.embeddings import embed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, 3, args.size, args.size), dtype=np.uint8)
    data = ArrayDataset(images, np.zeros((args.n, 1), dtype=np.int64))
    spec = InputSpec(3, args.size, args.size, IMAGENET_MEAN, IMAGENET_STD)
    encoder = build_encoder(args.backbone).eval()
    batches = [normalize_batch(torch.from_numpy(images[i : i + args.batch]), spec) for i in range(0, args.n, args.batch)]

    def raw() -> None:
        with torch.inference_mode():
            for x in batches:
                encoder(x)

    def extract() -> None:
        embed(encoder, data, spec, torch.device("cpu"), batch_size=args.batch)

    raw(), extract()  # warm-up
    times = {"raw": [], "extract": []}
    for _ in range(args.reps):
        for name, fn in (("raw", raw), ("extract", extract)):
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    best = {k: min(v) for k, v in times.items()}
    print(f"{args.backbone}, {args.n} images {args.size}x{args.size}, batch {args.batch}, "
          f"{torch.get_num_threads()} threads, best of {args.reps}")
    for name, t in best.items():
        print(f"  {name:8s} {args.n / t:8.1f} img/s")
    print(f"  extract / raw throughput: {best['raw'] / best['extract']:.3f}x (goal >= 0.9)")


if __name__ == "__main__":
    main()
