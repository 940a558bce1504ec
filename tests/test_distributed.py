"""torchrun's mathematics on CPU (gloo, 2 processes): 2 ranks x batch b give what 1 process x
batch 2b gives, for loss weighting, gradient methods and DGR; sharded evaluation equals one
pass; a NaN on one rank stops both. The model has no batch norm, so the two are comparable."""

from __future__ import annotations

import os
import socket
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from repeval.models import MultiTaskModel
from repeval.tasks import TaskSpec
from repeval.training.dgr import DGRConfig, DummyGradientRegularizer
from repeval.training.methods import create_method
from repeval.training.step import Batch, training_step

TASKS = tuple(TaskSpec(name, 3) for name in ("a", "b", "c"))
CASES = {
    "ew": ("ew", {}, None), "uw": ("uw", {}, None), "pcgrad": ("pcgrad", {}, None), "mgda": ("mgda", {}, None),
    "nash": ("nash", {}, None), "mgda-rep": ("mgda", {"rep_grad": True}, None), "gradnorm": ("gradnorm", {}, None),
    "cagrad": ("cagrad", {}, None), "imtl": ("imtl", {}, None), "dwa": ("dwa", {}, None), "autol": ("autol", {}, None),
    "sam": ("sam", {"base": "pcgrad"}, None), "pta": ("pta", {}, None), "single": ("single", {"task": "b"}, None),
    "ew+dgr": ("ew", {}, DGRConfig(lam=0.5, dummies=2)),
    "ew+dgr-squared": ("ew", {}, DGRConfig(lam=0.5, dummies=2, penalty="squared")),
    "pcgrad+dgr-fd": ("pcgrad", {}, DGRConfig(lam=0.5, dummies=2, estimator="finite-diff", eps=1e-3)),
}


class Flat(nn.Sequential):
    num_features = 16


def setup(case: str, device: str = "cpu"):
    torch.manual_seed(0)
    encoder = Flat(nn.Flatten(), nn.Linear(12, 16), nn.Tanh())
    name, options, dgr = CASES[case]
    model = MultiTaskModel(encoder, TASKS, hidden=8, dummies=dgr.dummies if dgr else 0).to(device)
    method = create_method(name, len(TASKS), **options)
    method.attach(model)
    method.to(torch.device(device))
    optimizer = torch.optim.SGD([*model.parameters(), *method.parameters()], lr=0.2)
    reg = DummyGradientRegularizer([model.dummy_heads[t.name] for t in TASKS], dgr) if dgr else None
    g = torch.Generator().manual_seed(1)
    batches = [Batch(torch.randn(8, 3, 2, 2, generator=g).to(device),
                     [y.to(device) for y in torch.randint(0, 3, (8, 3), generator=g).unbind(1)])
               for _ in range(6)]  # three steps, and Auto-lambda's meta batches
    return model, method, reg, optimizer, batches


def train_steps(case: str, rank: int = 0, world: int = 1, device: str = "cpu") -> torch.Tensor:
    model, method, reg, optimizer, batches = setup(case, device)
    share = 8 // world

    def part(batch: Batch) -> Batch:
        return Batch(batch.x[rank * share:(rank + 1) * share], [y[rank * share:(rank + 1) * share] for y in batch.ys])

    for batch, meta in zip(batches[:3], batches[3:]):
        training_step(model, part(batch), method, reg, optimizer, meta_batch=part(meta) if method.needs_meta_batch else None)
    return torch.cat([p.detach().flatten() for p in [*model.parameters(), *method.parameters()]]).cpu()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, job: str, arg: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    cuda = job.startswith("cuda")
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        result = JOBS[job](arg, rank, world)
        torch.save({"ok": True, "result": result}, f"{out}.{rank}")
    except Exception:  # noqa: BLE001 - reported to the test
        torch.save({"ok": False, "error": traceback.format_exc()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def run_ranks(job: str, arg: str, tmp_path, world: int = 2) -> list:
    out = str(tmp_path / job)
    mp.spawn(_worker, args=(world, _free_port(), job, arg, out), nprocs=world, join=True)
    results = [torch.load(f"{out}.{r}", weights_only=False) for r in range(world)]
    return results


def _evaluate(arg: str, rank: int, world: int) -> dict:
    from repeval import datasets
    from repeval.training.loop import evaluate
    from torch.utils.data import DataLoader

    from repeval.datasets import collate_batch
    from repeval.distributed import shard

    bundle = datasets.build("scenes", n_train=4, n_test=7, size=16)
    model = _dense_model(bundle)
    loader = DataLoader(bundle.test, batch_size=2, collate_fn=collate_batch, sampler=shard(len(bundle.test)))
    return evaluate(model, loader, bundle, torch.device("cpu"))


def _dense_model(bundle):
    from repeval.archs import build_arch_encoder
    from repeval.heads import HeadConfig

    torch.manual_seed(0)
    encoder = build_arch_encoder("split", "test_resnet", num_tasks=3, dense=True, input_size=(16, 16))
    return MultiTaskModel(encoder, bundle.tasks, head_config=HeadConfig(width=4), map_side=2)


def _nan_on_rank_1(arg: str, rank: int, world: int) -> str:
    from repeval.errors import NonFiniteLossError
    from repeval.training.loop import _raise_if_nonfinite

    bad = torch.tensor(4 if rank == 1 else -1)
    try:
        _raise_if_nonfinite(bad, 0, "run")
    except NonFiniteLossError as e:
        return str(e)
    return "no error"


def _embed(arg: str = "", rank: int = 0, world: int = 1):
    from repeval import datasets
    from repeval.models import build_encoder
    from repeval.probes.embeddings import embed

    bundle = datasets.build("multidigits", n_train=16, n_test=11)
    torch.manual_seed(0)
    return embed(build_encoder("test_resnet", bundle.input.channels), bundle.test, bundle.input, torch.device("cpu"), batch_size=4)


def _everything(arg: str, rank: int, world: int) -> dict:
    """One spawn of the ranks for every check (starting processes is the slow part)."""
    return {"steps": {case: train_steps(case, rank, world) for case in CASES}, "evaluate": _evaluate(arg, rank, world),
            "nan": _nan_on_rank_1(arg, rank, world), "embed": _embed(arg, rank, world)}


JOBS = {"all": _everything, "cuda": lambda arg, rank, world: {c: train_steps(c, rank, world, f"cuda:{rank}") for c in CASES}}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    results = run_ranks("all", "", tmp_path_factory.mktemp("ranks"))
    assert all(r["ok"] for r in results), [r.get("error") for r in results]
    return [r["result"] for r in results]


@pytest.mark.parametrize("case", list(CASES))
def test_two_ranks_equal_one_process_with_the_global_batch(case, ranks):
    single = train_steps(case)
    initial = torch.cat([p.detach().flatten() for p in [*setup(case)[0].parameters(), *setup(case)[1].parameters()]])
    assert (single - initial).abs().max() > 1e-3  # the steps moved the parameters
    for r in ranks:  # every rank holds the parameters of one process trained on the global batch
        torch.testing.assert_close(r["steps"][case], single, rtol=1e-5, atol=1e-6)


def test_sharded_evaluation_equals_one_pass(ranks):
    from torch.utils.data import DataLoader

    from repeval import datasets
    from repeval.datasets import collate_batch
    from repeval.training.loop import evaluate

    bundle = datasets.build("scenes", n_train=4, n_test=7, size=16)
    whole = evaluate(_dense_model(bundle), DataLoader(bundle.test, batch_size=2, collate_fn=collate_batch), bundle,
                     torch.device("cpu"))
    for r in ranks:
        assert r["evaluate"].keys() == whole.keys()
        for task, values in whole.items():
            assert r["evaluate"][task] == pytest.approx(values, rel=1e-6)  # float32 partial sums, other order


def test_a_nan_on_one_rank_stops_every_rank(ranks):
    assert [r["nan"] for r in ranks] == ["non-finite loss at epoch 1, step 5: training stopped; the last good "
                                         "checkpoint (if any) in run is intact"] * 2


def test_torchrun_trains_and_resumes_one_run(tmp_path):
    """`torchrun --nproc-per-node 2 -m repeval train ...` makes one run folder (rank 0 writes;
    config.json says 2 processes), and resumes under torchrun with each rank's RNG state."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from repeval.training import run as run_files

    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "repeval"]
    args = ["train", "multidigits", "--data-option", "n_train=64", "--data-option", "n_test=32", "--batch-size", "8",
            "--method", "pcgrad", "--dgr", "--no-progress", "--out", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*torchrun, *args, "--epochs", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = [p for p in Path(tmp_path).iterdir() if p.is_dir()]
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    assert done.stdout.strip() == str(run_dir)  # printed once, by rank 0
    state = torch.load(run_dir / "train_state.pt", weights_only=True)
    assert len(state["rng_ranks"]) == 2 and not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])
    again = subprocess.run([*torchrun, "train", "--resume", str(run_dir), "--epochs", "2"], capture_output=True,
                           text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert [m["epoch"] for m in run_files.read_metrics(run_dir)] == [0, 1]
    assert "resumes on" not in again.stderr  # same world size: no warning


def test_sharded_extraction_gathers_embeddings_in_order(ranks):
    """Probe extraction under torchrun: each rank embeds every second batch (11 samples in
    batches of 4: uneven shares) and every rank ends with all rows in dataset order, bit for bit
    those of one process."""
    import numpy as np

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the ranks run: a CPU reduction's order depends on the thread count
    try:
        single = _embed()
    finally:
        torch.set_num_threads(threads)
    for r in ranks:
        assert r["embed"].shape == single.shape == (11, single.shape[1])
        np.testing.assert_array_equal(r["embed"], single)


@pytest.mark.cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices (nccl)")
def test_nccl_ranks_equal_one_process(tmp_path):
    results = run_ranks("cuda", "", tmp_path)
    assert all(r["ok"] for r in results), [r.get("error") for r in results]
    for case in CASES:
        single = train_steps(case, device="cuda:0")
        for r in results:
            torch.testing.assert_close(r["result"][case], single, rtol=1e-4, atol=1e-5)

