"""Scalars a run streams while it trains. With `--tensorboard` they go to `RUN/tb/` as TensorBoard
event files (`torch.utils.tensorboard`; the `tensorboard` package is an optional extra, imported
only by a run that asks for it). Without it nothing extra is written: the same numbers' epoch
means are in `metrics.jsonl` either way.

Names: `loss/TASK`, `dgr_penalty/TASK`, `dgr_pull/TASK` and `dgr_pull/total`, `method/NAME[/TASK]`
(the method's `diagnostics()`), `lr`, `images_per_second` at watched steps; `test/TASK/METRIC`
and `train_loss_epoch/TASK` at each epoch's end. The x axis is the optimiser step.

The event files sit outside the run's commit protocol: a resumed run purges the events of the
steps it trains again (SummaryWriter's `purge_step`), so a kill leaves no duplicate curve."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

from repeval.errors import InvalidChoiceError

TB_DIR = "tb"
INSTALL_HINT = "pip install -e \".[tensorboard]\" in a checkout, or pip install tensorboard"


def check_tensorboard() -> None:
    """Refuse `--tensorboard` when the package is missing (before any folder exists)."""
    if importlib.util.find_spec("tensorboard") is None:
        raise InvalidChoiceError(f"--tensorboard needs the tensorboard package, which is not installed: {INSTALL_HINT}")


class ScalarLog:
    """Where a run's scalars go; this one keeps nothing (no --tensorboard, or not rank 0)."""

    enabled = False

    def add(self, step: int, values: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardLog(ScalarLog):
    enabled = True

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter  # the optional extra: imported by this run only

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def add(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)

    def close(self) -> None:
        self.writer.close()


class Throughput:
    """Images per second since the last `take`."""

    def __init__(self):
        self.started, self.images = time.perf_counter(), 0

    def count(self, images: int) -> None:
        self.images += images

    def take(self) -> float:
        now = time.perf_counter()
        rate = self.images / max(now - self.started, 1e-9)
        self.started, self.images = now, 0
        return rate


def open_scalar_log(enabled: bool, run_dir: Path, first_step: int) -> ScalarLog:
    """The run's log; `first_step`: the global step it (re)starts at (events from there on are
    purged, as a resumed run trains those steps again)."""
    if not enabled:
        return ScalarLog()
    return TensorBoardLog(Path(run_dir) / TB_DIR, purge_step=first_step or None)
