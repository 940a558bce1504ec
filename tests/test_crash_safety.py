"""Nothing is lost: kills at every file event, two writers, Ctrl-C, non-finite weights, extension."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

from repeval import datasets
from repeval.app.cli import main
from repeval.errors import InvalidChoiceError, NonFiniteLossError
from repeval.storage import folder_lock, observe_file_events
from repeval.training import loop
from repeval.training import run as run_files
from repeval.training.config import TrainConfig
from repeval.training.loop import train
from repeval.training.sweep import run_sweep

TINY = ["--data-option", "n_train=64", "--data-option", "n_test=32", "--batch-size", "32", "--no-progress"]


def without_timing(lines):
    return [{k: v for k, v in m.items() if k not in ("seconds", "images_per_second")} for m in lines]


def in_child(work) -> int:
    """Run `work()` in a forked process (a real process that SIGKILL ends at once, without
    paying for a fresh interpreter); returns its wait status."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            torch.set_num_threads(1)  # the parent's OpenMP pool does not survive fork
            code = work()
        except BaseException:  # noqa: BLE001
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return status


def kill_at(index: int):
    count = iter(range(10**9))

    def observer(kind: str, path: Path) -> None:
        if next(count) == index:
            os.kill(os.getpid(), signal.SIGKILL)

    return observer


def main_observed(observer, argv: list[str]) -> int:
    with observe_file_events(observer):
        return main(argv)


def only_run(folder: Path) -> Path:
    (run_dir,) = folder.iterdir()
    return run_dir


def test_a_kill_after_any_file_event_resumes_to_the_uninterrupted_run(tmp_path):
    datasets.build("multidigits", n_train=8, n_test=8)  # scikit-learn loads once, before the forks
    args = ["train", *TINY, "--epochs", "3"]
    events: list[tuple[str, str]] = []
    trace = tmp_path / "events.jsonl"

    def record(kind, path):
        with open(trace, "a") as f:
            f.write(json.dumps([kind, Path(path).name]) + "\n")

    assert in_child(lambda: main_observed(record, [*args, "--out", str(tmp_path / "straight")])) == 0
    events = [tuple(json.loads(line)) for line in trace.read_text().splitlines()]
    reference = only_run(tmp_path / "straight")
    expected = without_timing(run_files.read_metrics(reference))
    assert [m["epoch"] for m in expected] == [0, 1, 2]
    # Every event of the run's start, its first epoch's commit and a later one's.
    last = next(i for i, (_, name) in enumerate(events) if ".e2." in name)
    kinds = {kind for kind, _ in events[:last]}
    assert kinds == {"create", "write", "fsync", "rename", "fsync-dir"}
    assert sum(name == "commit.json" for _, name in events[:last]) == 2

    for index in range(last):
        out = tmp_path / f"kill{index}"
        status = in_child(lambda: main_observed(kill_at(index), [*args, "--out", str(out)]))
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (index, events[index])
        run_dir = only_run(out)
        if not (run_dir / "config.json").is_file():
            # Killed before the run existed: nothing was trained, there is nothing to resume.
            assert not any(p.name in ("checkpoint.pt", "commit.json") for p in run_dir.iterdir())
            continue
        assert in_child(lambda: main(["train", "--resume", str(run_dir), "--no-progress"])) == 0, events[index]
        assert without_timing(run_files.read_metrics(run_dir)) == expected, (index, events[index])
        a, b = (torch.load(d / "checkpoint.pt", weights_only=True) for d in (reference, run_dir))
        assert all(torch.equal(v, b["encoder"][k]) for k, v in a["encoder"].items()), events[index]
        leftovers = [p.name for p in run_dir.iterdir() if p.name.endswith((".tmp", ".next"))]
        assert leftovers == [], (index, events[index])


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another live process holding `folder`'s lock (flock + owner record), until it is killed."""
    code = (
        "import fcntl, json, os, sys, time\n"
        f"fd = os.open({str(folder / '.lock')!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, json.dumps({'pid': os.getpid(), 'host': 'elsewhere'}).encode())\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_gets_one_line_and_a_dead_owner_is_taken_over(tmp_path, capsys, caplog):
    run_dir = train(TrainConfig(dataset_args=dict(n_train=64, n_test=32), batch_size=32, epochs=1, progress=False,
                                out_dir=str(tmp_path)))
    holder = _hold_lock(run_dir)
    try:
        before = sorted(p.name for p in run_dir.iterdir())
        code = main(["train", "--resume", str(run_dir), "--epochs", "2", "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert f"run folder {str(run_dir)!r} is in use by pid {holder.pid} on host elsewhere" in err
        assert sorted(p.name for p in run_dir.iterdir()) == before
    finally:
        holder.kill()
        holder.wait()
    # The owner died without releasing: its record stays, the kernel dropped its flock.
    assert str(holder.pid) in (run_dir / ".lock").read_text()
    with caplog.at_level("WARNING", logger="repeval"):
        assert main(["train", "--resume", str(run_dir), "--epochs", "2", "--no-progress"]) == 0
    assert f"taking over the lock of pid {holder.pid} on host elsewhere" in caplog.text
    assert len(run_files.read_metrics(run_dir)) == 2
    assert (run_dir / ".lock").read_text() == ""  # released cleanly


def test_two_sweeps_share_a_grid_run_by_run(tmp_path):
    spec = {"name": "s", "train": {"dataset": "multidigits", "dataset_args": {"n_train": 64, "n_test": 32},
                                   "batch_size": 32, "epochs": 1}, "grid": {"methods": ["ew", "uw"]}}
    busy = tmp_path / "s" / "ew-seed0"
    busy.mkdir(parents=True)
    holder = _hold_lock(busy)  # another sweep process is training ew
    try:
        done = run_sweep(spec, tmp_path)
        assert [p.name for p in done] == ["uw-seed0"]
        assert not (busy / "config.json").exists()
    finally:
        holder.kill()
        holder.wait()
    done = run_sweep(spec, tmp_path)
    assert [p.name for p in done] == ["ew-seed0", "uw-seed0"]
    assert all(len(run_files.read_metrics(p)) == 1 for p in done)


def test_resume_extends_a_finished_run_to_more_epochs(tmp_path, caplog):
    base = dict(dataset_args=dict(n_train=64, n_test=32), batch_size=32, progress=False)
    straight = train(TrainConfig(**base, epochs=3, out_dir=str(tmp_path / "a")))
    short = train(TrainConfig(**base, epochs=2, out_dir=str(tmp_path / "b")))
    with caplog.at_level("INFO", logger="repeval"):
        train(TrainConfig(epochs=3), resume_dir=short)
    assert "extending the run from 2 to 3 epochs" in caplog.text
    assert without_timing(run_files.read_metrics(short)) == without_timing(run_files.read_metrics(straight))
    assert run_files.read_config(short).epochs == 3
    with pytest.raises(InvalidChoiceError, match="--epochs 2 is fewer than the 3 epochs"):
        train(TrainConfig(epochs=2), resume_dir=short)
    with caplog.at_level("INFO", logger="repeval"):
        train(TrainConfig(), resume_dir=short)  # finished: nothing to do, nothing changes
    assert "all 3 epochs are already trained" in caplog.text


def test_non_finite_weights_are_never_saved_and_the_last_good_epoch_resumes(tmp_path, monkeypatch):
    real_step = loop.training_step
    calls = {"n": 0}

    def poison_weights(model, *args, **kwargs):
        out = real_step(model, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 4:  # the last step of epoch 2 (2 steps per epoch): the losses stay finite
            with torch.no_grad():
                next(model.encoder.parameters()).fill_(float("nan"))
        return out

    monkeypatch.setattr(loop, "training_step", poison_weights)
    with pytest.raises(NonFiniteLossError, match=r"non-finite weights at epoch 2, after step 2 \(encoder "):
        train(TrainConfig(dataset_args=dict(n_train=64, n_test=32), batch_size=32, epochs=3, progress=False,
                          out_dir=str(tmp_path)))
    run_dir = only_run(tmp_path)
    assert run_files.committed_epoch(run_dir) == 0 and len(run_files.read_metrics(run_dir)) == 1
    ckpt = torch.load(run_dir / "checkpoint.pt", weights_only=True)
    assert all(bool(v.isfinite().all()) for v in ckpt["encoder"].values() if v.is_floating_point())
    monkeypatch.setattr(loop, "training_step", real_step)
    train(TrainConfig(), resume_dir=run_dir)
    metrics = run_files.read_metrics(run_dir)
    assert [m["epoch"] for m in metrics] == [0, 1, 2]
    assert all(math.isfinite(v) for v in metrics[-1]["train_loss"].values())


def test_ctrl_c_says_where_the_run_stopped_and_how_to_resume(tmp_path, capsys, monkeypatch):
    real_step = loop.training_step
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # epoch 2, first step
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(loop, "training_step", interrupted)
    code = main(["train", *TINY, "--epochs", "3", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    run_dir = only_run(tmp_path)
    assert code == 130
    assert f"stopped: interrupted in epoch 2/3; {run_dir} keeps every epoch it saved. " \
           f"Continue with: repeval train --resume {run_dir}" in err
    monkeypatch.setattr(loop, "training_step", real_step)
    assert main(["train", "--resume", str(run_dir)]) == 0
    assert len(run_files.read_metrics(run_dir)) == 3


def test_folder_lock_is_reentrant_in_one_process_and_exclusive_across_processes(tmp_path):
    # A fork would share the parent's lock (flock belongs to the open file): use a new process.
    other = [sys.executable, "-c", "import sys\nfrom repeval.errors import FolderInUseError\n"
             "from repeval.storage import folder_lock\ntry:\n    with folder_lock(sys.argv[1]): pass\n"
             "except FolderInUseError as e:\n    sys.exit(str(e))", str(tmp_path)]
    with folder_lock(tmp_path, "run folder"):
        with folder_lock(tmp_path, "run folder"):
            pass
        refused = subprocess.run(other, capture_output=True, text=True)
        assert refused.returncode == 1 and f"is in use by pid {os.getpid()}" in refused.stderr
    assert subprocess.run(other).returncode == 0
