"""Does the data keep up with the model? Images/s the loaders deliver, beside the step rate.

For each dataset at its recipe size, from files in its real on-disk format:
- nyuv2       288x384 .npy samples, scale 1.0/1.2/1.5 + crop + flip per sample (batch 4)
- cityscapes  256x512 PNG/TIF samples (Auto-lambda's layout), 256x256 crop + flip (batch 4)
- utkface     64x64 from the decoded, memory-mapped cache (batch 64; decoding happens once)
- imagefolder 500x375 JPEGs decoded, resized and centre-cropped to 224 per sample (batch 64)

it times a DataLoader with each `--workers` count, and for nyuv2, cityscapes and utkface the
batches of `--data-on-device` (the splits held on the device, augmented there). Beside them it
prints the images/s of one training step (EW, `--backbone`, the dataset's recipe batch) on this
device, so the two can be compared: a loader slower than the step starves the device.

    python benchmarks/loader_throughput.py [--workers 0 1 2] [--samples 32] [--backbone test_resnet] [--device cpu]

The recipe's backbone is resnet50 (`--backbone resnet50`); the default `test_resnet` keeps the
run short on a CPU, where resnet50 steps take seconds and no loader is the bottleneck.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from _formats import write_imagefolder_jpegs, write_nyuv2_layout
from torch.utils.data import DataLoader

from repeval import datasets
from repeval.datasets import InputNormalizer, collate_batch
from repeval.datasets.device import DeviceLoader, DeviceSplit
from repeval.training.config import TrainConfig
from repeval.training.loop import build_training
from repeval.training.step import to_device, training_step

BATCH = {"nyuv2": 4, "cityscapes": 4, "utkface": 64, "imagefolder": 64}


def build(name: str, root: Path, samples: int):
    samples = max(samples, 3 * BATCH[name])  # whole batches, whatever the recipe's batch size
    if name == "nyuv2":
        return {"data_dir": str(write_nyuv2_layout(root / name, samples))}
    if name == "cityscapes":
        from repeval.datasets.cityscapes import write_synthetic

        return {"data_dir": str(write_synthetic(root / name, "dgr", n_train=samples, n_test=1, height=256, width=512))}
    if name == "utkface":
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.fixtures import make_utkface_folder

        return {"data_dir": str(make_utkface_folder(root / name, n_good=samples))}
    return {"data_dir": str(write_imagefolder_jpegs(root / name, samples)), "size": 224}


def rate(batches, device: torch.device) -> float:
    start, seen = time.perf_counter(), 0
    for images, _ in batches:
        images = images.to(device, non_blocking=True)
        seen += len(images)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return seen / (time.perf_counter() - start)


def step_rate(name: str, args: dict, backbone: str, device: str, reps: int = 3) -> float:
    config = TrainConfig(dataset=name, data_dir=args["data_dir"], dataset_args={k: v for k, v in args.items() if k != "data_dir"},
                         backbone=backbone, batch_size=BATCH[name], device=device, progress=False).resolved()
    training = build_training(config)
    images, targets = training.bundle.train.__getitems__(list(range(BATCH[name])))
    batch = to_device(images, targets, InputNormalizer(training.bundle.input, training.device), training.device,
                      training.execution.channels_last)
    times = []
    for _ in range(reps + 1):
        start = time.perf_counter()
        training_step(training.model, batch, training.method, None, training.optimizer, training.params,
                      precision=training.execution.precision)
        if training.device.type == "cuda":
            torch.cuda.synchronize(training.device)
        times.append(time.perf_counter() - start)
    return BATCH[name] / min(times[1:])  # the first step warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--samples", type=int, default=32, help="training samples written per dataset")
    parser.add_argument("--backbone", default="test_resnet")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--datasets", nargs="+", default=list(BATCH))
    args = parser.parse_args()
    device = torch.device(args.device)
    header = f"{'dataset':<12}" + "".join(f"{f'{w} workers':>12}" for w in args.workers) + f"{'on device':>12}{'step':>10}"
    print(f"images/s delivered by the loaders, and by one training step ({args.backbone}, {device})\n{header}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.datasets:
            data_args = build(name, Path(tmp), args.samples)
            bundle = datasets.build(name, **data_args)
            cells = []
            for workers in args.workers:
                loader = DataLoader(bundle.train, batch_size=BATCH[name], shuffle=True, collate_fn=collate_batch,
                                    num_workers=workers, pin_memory=device.type == "cuda", drop_last=True)
                rate(loader, device)  # warm-up: worker start, page cache
                cells.append(f"{rate(loader, device):>12.1f}")
            if name == "imagefolder":
                cells.append(f"{'n/a':>12}")  # decoded per sample: held on no device
            else:
                on_device = DeviceLoader(DeviceSplit(bundle.train, device), torch.randperm(len(bundle.train)).tolist(),
                                         BATCH[name], drop_last=True)
                cells.append(f"{rate(on_device, device):>12.1f}")
            cells.append(f"{step_rate(name, data_args, args.backbone, args.device):>10.1f}")
            print(f"{name:<12}" + "".join(cells), flush=True)


if __name__ == "__main__":
    main()
