"""Training-step time and images/s over 1, 2 and 4 processes (torchrun's setting: one process per
device; gloo on CPU here, nccl with `--device cuda` on a multi-GPU machine), for ew and pcgrad,
with and without DGR, measured side by side in one script. Weak scaling: every rank keeps its
batch, so the global batch grows with the processes; scaling efficiency = images/s with n
processes / (n x images/s with 1).

The step is repeval's own (`training_step`) with its explicit all-reduces (see
`repeval.distributed`): gradients for every method, plus the task gradients before the
combination for pcgrad, plus the dummy heads' gradients for DGR.

    python benchmarks/ddp_scaling.py [--procs 1 2 4] [--batch 16] [--steps 5] [--backbone test_resnet] [--size 64]

On a CPU the processes share the cores (each gets cores / n threads), so efficiency there measures
the communication and duplicated work, not the speed-up devices would give. Two processes on one
GPU are not scaling either.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

CASES = [("ew", False), ("ew", True), ("pcgrad", False), ("pcgrad", True)]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, args, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    cuda = args.device == "cuda"
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    from repeval.heads import HeadConfig
    from repeval.models import MultiTaskModel, build_encoder
    from repeval.tasks import TaskSpec
    from repeval.training.dgr import DGRConfig, DummyGradientRegularizer
    from repeval.training.methods import create_method
    from repeval.training.step import Batch, training_step

    device = torch.device("cuda" if cuda else "cpu")
    tasks = tuple(TaskSpec(name, 10) for name in ("a", "b", "c"))
    times = {}
    for method_name, with_dgr in CASES:
        torch.manual_seed(0)
        model = MultiTaskModel(build_encoder(args.backbone, 3), tasks, dummies=3 if with_dgr else 0,
                               head_config=HeadConfig(hidden=64)).to(device)
        method = create_method(method_name, len(tasks))
        method.attach(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)
        reg = DummyGradientRegularizer([model.dummy_heads[t.name] for t in tasks], DGRConfig()) if with_dgr else None
        g = torch.Generator().manual_seed(rank)
        batch = Batch(torch.randn(args.batch, 3, args.size, args.size, generator=g).to(device),
                      [y.to(device) for y in torch.randint(0, 10, (args.batch, 3), generator=g).unbind(1)])
        steps = []
        for i in range(args.steps + 1):
            dist.barrier()
            started = time.perf_counter()
            training_step(model, batch, method, reg, optimizer)
            if cuda:
                torch.cuda.synchronize()
            elapsed = torch.tensor([time.perf_counter() - started])
            dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)  # a step lasts as long as its slowest rank
            if i > 0:
                steps.append(float(elapsed))
        times[f"{method_name}{' + DGR' if with_dgr else ''}"] = statistics.median(steps)
    if rank == 0:
        torch.save(times, out)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--batch", type=int, default=16, help="per-process batch")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--backbone", default="test_resnet")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.procs:
            out = os.path.join(tmp, f"{n}.pt")
            mp.spawn(_worker, args=(n, _port(), args, out), nprocs=n, join=True)
            results[n] = torch.load(out)
    print(f"{args.backbone}, 3 classification tasks, {args.size}x{args.size}, batch {args.batch} per process, "
          f"{args.device} ({os.cpu_count()} cores), median of {args.steps} steps")
    print(f"{'case':16s} " + " ".join(f"{f'{n} proc: ms  img/s  eff':>28s}" for n in args.procs))
    for case in results[args.procs[0]]:
        base = args.batch / results[args.procs[0]][case] / args.procs[0]
        cells = []
        for n in args.procs:
            t = results[n][case]
            rate = n * args.batch / t
            cells.append(f"{t * 1000:10.1f} {rate:8.1f} {rate / (n * base):7.2f}")
        print(f"{case:16s} " + " ".join(f"{c:>28s}" for c in cells))


if __name__ == "__main__":
    main()
