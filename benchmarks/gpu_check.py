"""Validate a GPU machine in minutes: run this first on any new GPU machine (`make gpu-check`).

    python benchmarks/gpu_check.py [--device cuda] [--out gpu_check.json]
    python benchmarks/gpu_check.py --device cpu --quick     # the same checks, tiny, on a CPU (CI runs it)

Checks, each failing loudly (exit 1, the failed check named) on any mismatch:

1. tests:      the CUDA-marked tests (`pytest -m cuda`: bf16 steps, the 2-process nccl run when two
               GPUs exist); skipped on CPU, where the CPU suite runs them.
2. bf16:       one training step under bf16 autocast vs float32 from the same weights: task losses
               within 5 % and the encoder gradient's cosine >= 0.75 (tests/test_precision.py says why
               not closer), everything finite.
3. step times:  the NYUv2 recipe (batch 4, 288x384, dilated ResNet-50, 256-channel DeepLabv3 heads,
               3 tasks) for vanilla EW, DGR exact and finite-diff with d = 1 and 3, PCGrad and MTAN,
               timed round-robin; each as a ratio to vanilla, DGR's overhead also against its
               floor (the regulariser's call alone on a detached z, d = 3). Peak memory of each.
4. data:       images/s the NYUv2 loader delivers (per-sample .npy reads, scale, crop, flip at the
               recipe size) with 0, 2 and 4 workers, and with `--data-on-device` (held and
               augmented on the device), beside the vanilla step's images/s.

Writes one JSON (`--out`) and prints one table. `--quick`: 64x64, batch 2, `test_resnet`, 8-channel
heads, two repetitions: a pipeline check, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from _formats import write_nyuv2_layout

from repeval import __version__
from repeval.archs import build_arch_encoder
from repeval.heads import HeadConfig
from repeval.models import MultiTaskModel, to_channels_last
from repeval.tasks import TaskSpec
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer
from repeval.training.methods import create_method
from repeval.training.step import Batch, Execution, param_groups, training_step

TASKS = (TaskSpec("seg", 13, kind="segmentation"), TaskSpec("depth", 1, kind="depth"), TaskSpec("normal", 3, kind="normals"))
LOSS_RTOL, GRAD_COSINE = 0.05, 0.75
# name -> (arch, method, DGR estimator, dummies per task)
VARIANTS = {
    "vanilla": ("split", "ew", None, 0),
    "dgr exact d=1": ("split", "ew", "exact", 1),
    "dgr exact d=3": ("split", "ew", "exact", 3),
    "dgr finite-diff d=1": ("split", "ew", "finite-diff", 1),
    "dgr finite-diff d=3": ("split", "ew", "finite-diff", 3),
    "pcgrad": ("split", "pcgrad", None, 0),
    "mtan": ("mtan", "ew", None, 0),
}


def settings(quick: bool) -> dict:
    if quick:
        return dict(size=(64, 64), batch=2, backbone="test_resnet", width=8, reps=2, loader_samples=8, workers=(0, 1))
    return dict(size=(288, 384), batch=4, backbone="resnet50", width=256, reps=5, loader_samples=64, workers=(0, 2, 4))


def make_batch(s: dict, device: torch.device, channels_last: bool, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    b, (h, w) = s["batch"], s["size"]
    x = torch.randn(b, 3, h, w, generator=g)
    ys = [torch.randint(-1, 13, (b, h, w), generator=g), torch.rand(b, 1, h, w, generator=g) * 5,
          torch.nn.functional.normalize(torch.randn(b, 3, h, w, generator=g), dim=1)]
    x = x.to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return Batch(x, [y.to(device) for y in ys])


class Setup:
    """One variant's model, method, regulariser and optimiser on the device."""

    def __init__(self, variant: str, s: dict, execution: Execution):
        arch, method, estimator, dummies = VARIANTS[variant]
        torch.manual_seed(0)
        encoder = build_arch_encoder(arch, s["backbone"], num_tasks=len(TASKS), dense=True, input_size=s["size"])
        model = MultiTaskModel(encoder, TASKS, dummies=max(dummies, 1) if estimator else 0,
                               head_config=HeadConfig(width=s["width"]), map_side=encoder.map_side(*s["size"]))
        self.model = model.to(execution.device)
        if execution.channels_last:
            to_channels_last(self.model)
        self.method = create_method(method, len(TASKS))
        self.method.attach(self.model)
        self.method.to(execution.device)
        self.reg = (DummyGradientRegularizer([self.model.dummy_heads[t.name] for t in TASKS],
                                             DGRConfig(lam=0.1, estimator=estimator, dummies=dummies),
                                             per_task_z=self.model.per_task) if estimator else None)
        self.optimizer = torch.optim.SGD([*self.model.parameters(), *self.method.parameters()], lr=1e-4, momentum=0.9)
        self.params = param_groups(self.model)
        self.execution = execution

    def step(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        return training_step(self.model, batch, self.method, self.reg, self.optimizer, self.params,
                             precision=self.execution.precision)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_tests(device: torch.device) -> dict:
    if device.type != "cuda":
        return {"status": "skipped on CPU (the CPU suite runs them)"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests"], capture_output=True, text=True)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    return {"status": "passed" if done.returncode in (0, 5) else "FAILED", "summary": last}


def check_bf16(s: dict, device: torch.device) -> dict:
    """One step from the same weights in bf16 and in float32: losses and encoder gradients."""
    out = {}
    for precision in ("bf16", "fp32"):
        setup = Setup("dgr exact d=1", s, Execution(device, precision, precision == "bf16", 0))
        losses, penalties = setup.step(make_batch(s, device, precision == "bf16"))
        grad = torch.cat([p.grad.flatten().float() for p in setup.model.encoder.parameters() if p.grad is not None])
        out[precision] = (losses.float().cpu(), penalties.float().cpu(), grad)
    (l16, p16, g16), (l32, p32, g32) = out["bf16"], out["fp32"]
    cosine = float(torch.nn.functional.cosine_similarity(g16, g32.to(g16.device), dim=0))
    loss_error = float(((l16 - l32).abs() / l32.abs().clamp_min(1e-6)).max())
    finite = bool(torch.isfinite(l16).all() and torch.isfinite(p16).all() and torch.isfinite(g16).all())
    ok = finite and loss_error <= LOSS_RTOL and cosine >= GRAD_COSINE
    return {"status": "passed" if ok else "FAILED", "loss_rel_error": loss_error, "grad_cosine": cosine, "finite": finite}


def check_steps(s: dict, execution: Execution) -> dict:
    """Seconds per step of each variant (median, timed round-robin) and peak memory."""
    device = execution.device
    setups = {name: Setup(name, s, execution) for name in VARIANTS}
    batch = make_batch(s, device, execution.channels_last)
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    peaks: dict[str, int | None] = {}
    floor_times = []
    floor_reg = setups["dgr exact d=3"].reg
    for name, setup in setups.items():  # warm-up, and each variant's peak memory
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        losses, _ = setup.step(batch)
        sync(device)
        peaks[name] = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
        if not bool(torch.isfinite(losses).all()):
            raise SystemExit(f"gpu_check: FAILED: {name} gave non-finite losses {losses.tolist()}")
    with torch.no_grad():
        z = setups["dgr exact d=3"].model.encode(batch.x).float()
    for _ in range(s["reps"]):
        for name, setup in setups.items():
            sync(device)
            start = time.perf_counter()
            setup.step(batch)
            sync(device)
            times[name].append(time.perf_counter() - start)
        sync(device)
        start = time.perf_counter()
        floor_reg(z, batch.ys)
        sync(device)
        floor_times.append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    floor = statistics.median(floor_times)
    rows = {name: {"seconds": median[name], "vs_vanilla": median[name] / median["vanilla"],
                   "images_per_second": s["batch"] / median[name], "peak_bytes": peaks[name]} for name in VARIANTS}
    for name in VARIANTS:
        if name.startswith("dgr") and name.endswith("d=3"):
            rows[name]["overhead_vs_floor"] = (median[name] - median["vanilla"]) / floor
    return {"status": "passed", "floor_seconds": floor, "variants": rows}


def check_data(s: dict, device: torch.device) -> dict:
    from torch.utils.data import DataLoader

    from repeval import datasets
    from repeval.datasets import collate_batch
    from repeval.datasets.device import DeviceLoader, DeviceSplit

    with tempfile.TemporaryDirectory() as tmp:
        bundle = datasets.build("nyuv2", data_dir=str(write_nyuv2_layout(Path(tmp), s["loader_samples"], *s["size"])))
        rates = {}
        for workers in s["workers"]:
            loader = DataLoader(bundle.train, batch_size=s["batch"], shuffle=True, collate_fn=collate_batch,
                                num_workers=workers, pin_memory=device.type == "cuda", drop_last=True)
            start, seen = time.perf_counter(), 0
            for images, _ in loader:
                images.to(device, non_blocking=True)
                seen += len(images)
            sync(device)
            rates[str(workers)] = seen / (time.perf_counter() - start)
        split = DeviceSplit(bundle.train, device)
        start, seen = time.perf_counter(), 0
        for images, _ in DeviceLoader(split, torch.randperm(len(split)).tolist(), s["batch"], drop_last=True):
            seen += len(images)
        sync(device)
    return {"status": "passed", "loader_images_per_second": rates,
            "on_device_images_per_second": seen / (time.perf_counter() - start)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a pipeline check")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but no CUDA device is available")
    s = settings(args.quick)
    execution = Execution.of(args.device)
    started = time.perf_counter()
    report = {
        "repeval_version": __version__, "torch": torch.__version__, "python": platform.python_version(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "execution": execution.to_dict(), "settings": {k: list(v) if isinstance(v, tuple) else v for k, v in s.items()},
        "checks": {},
    }
    for name, run in (("tests", lambda: check_tests(device)), ("bf16", lambda: check_bf16(s, device)),
                      ("steps", lambda: check_steps(s, execution)), ("data", lambda: check_data(s, device))):
        report["checks"][name] = run()
        print(f"{name}: {report['checks'][name]['status']}", flush=True)
    report["seconds"] = time.perf_counter() - started
    args.out.write_text(json.dumps(report, indent=2))
    print(render(report))
    failed = [name for name, c in report["checks"].items() if c["status"] == "FAILED"]
    if failed:
        print(f"gpu_check: FAILED: {', '.join(failed)} (details in {args.out})", file=sys.stderr)
        return 1
    return 0


def render(report: dict) -> str:
    steps = report["checks"]["steps"]
    lines = [f"{report['device']}  ({report['execution']['precision']}, channels_last={report['execution']['channels_last']})",
             f"{'variant':<22}{'s/step':>9}{'x vanilla':>11}{'img/s':>9}{'peak MiB':>10}{'DGR/floor':>11}"]
    for name, row in steps["variants"].items():
        peak = "" if row["peak_bytes"] is None else f"{row['peak_bytes'] / 2**20:.0f}"
        floor = f"{row['overhead_vs_floor']:.2f}" if "overhead_vs_floor" in row else ""
        lines.append(f"{name:<22}{row['seconds']:>9.4f}{row['vs_vanilla']:>11.2f}{row['images_per_second']:>9.1f}{peak:>10}{floor:>11}")
    bf16 = report["checks"]["bf16"]
    lines.append(f"bf16 vs fp32: loss rel. error {bf16['loss_rel_error']:.3g}, encoder gradient cosine {bf16['grad_cosine']:.4f}")
    rates = report["checks"]["data"]["loader_images_per_second"]
    lines.append("loader img/s by workers: " + ", ".join(f"{w}: {r:.1f}" for w, r in rates.items())
                 + f"; on the device: {report['checks']['data']['on_device_images_per_second']:.1f}"
                 + f"  (vanilla step: {steps['variants']['vanilla']['images_per_second']:.1f} img/s)")
    lines.append(f"tests: {report['checks']['tests']['status']}; total {report['seconds']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
