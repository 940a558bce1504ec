"""Read every sample of a dataset once and list every file that does not fit its format
(`repeval check-data`), for people who want to know before a 300-epoch run.

Training refuses a bad sample the moment it reads one (a `DataError` naming the file), rather
than skipping it: a skipped file silently changes the split that every number is reported on.
UTKFace is the exception its official protocol makes: files whose names do not parse and images
that do not decode are left out, counted and reported (`DatasetBundle.report`); they are listed
here as well."""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from repeval.errors import RepevalError
from repeval.kinds import kind_of

# Report lists of files a dataset leaves out by its protocol (UTKFace's), and what they are.
SKIPPED_LISTS = {"unparsed_names": "name does not parse", "undecodable": "does not decode"}


@dataclass
class ScanResult:
    """What `scan` found: samples read per split, one line per bad file, and per split and task
    the number of samples whose target has no valid value (dense kinds' ignore rules)."""

    samples: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    without_targets: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        counts = ", ".join(f"{n} {split}" for split, n in self.samples.items())
        skipped = f"; {len(self.skipped)} file(s) left out by the dataset's protocol" if self.skipped else ""
        verdict = "no problem found" if self.clean else f"{len(self.problems)} bad sample(s)"
        return f"checked {sum(self.samples.values())} samples ({counts}): {verdict}{skipped}"

    def empty_batch_lines(self, batch_size: int) -> list[str]:
        """Per task with samples lacking a valid target in the train split: how many, and how
        many batches of `batch_size` of a shuffled epoch (drop_last) have none at all: those
        steps do not train that task (`repeval train` logs them as batches_without_targets)."""
        n = self.samples.get("train", 0)
        lines = []
        for task, empty in self.without_targets.get("train", {}).items():
            if not empty:
                continue
            batches = n // batch_size if n > batch_size else 1
            size = min(batch_size, n)
            chance = math.comb(empty, size) / math.comb(n, size)  # all `size` drawn without replacement are empty
            lines.append(f"{task}: {empty} of {n} train samples ({100 * empty / n:.1f}%) have no valid target; "
                         f"a shuffled batch of {size} has none with probability {chance:.3g}, "
                         f"about {chance * batches:.3g} of {batches} batches per epoch")
        return lines


def _present(kinds, targets) -> list[bool]:
    """Whether each task's target of one sample has a valid value (its kind's ignore rule)."""
    import torch

    return [bool(kind.present(torch.as_tensor(np.asarray(t))[None])) for kind, t in zip(kinds, targets)]


def sample_check(split, tasks) -> Callable[[int], tuple[str | None, list[bool] | None]]:
    """A function of a sample index: (what is wrong with it or None, which tasks have a valid
    target or None when unknown). Splits that read files per sample (`load`) check what they
    read; in-memory ones check their labels against the tasks."""
    from repeval.datasets.dense import DenseDataset

    kinds = [kind_of(t) for t in tasks]
    if hasattr(split, "load"):
        def check(i: int) -> tuple[str | None, list[bool] | None]:
            try:
                loaded = split.load(i)
            except RepevalError as e:
                return str(e), None
            return None, _present(kinds, loaded[1]) if isinstance(split, DenseDataset) else None
        return check

    def check_labels(i: int) -> tuple[str | None, list[bool] | None]:
        for k, (task, kind) in enumerate(zip(tasks, kinds)):
            problem = kind.target_problem(np.asarray(split.labels[i, k:k + 1]))
            if problem:
                return f"sample {int(split.indices[i])}: the {task.name} label has {problem}", None
        return None, None
    return check_labels


def scan(bundle, progress: bool = False, workers: int = 4) -> ScanResult:
    """Check every sample of `bundle`'s train and test splits (decoding in `workers` threads)."""
    from tqdm.auto import tqdm

    result = ScanResult()
    for key, label in SKIPPED_LISTS.items():
        result.skipped += [f"{name}: {label}" for name in bundle.report.get(key, [])]
    for name, split in (("train", bundle.train), ("test", bundle.test)):
        check = sample_check(split, bundle.tasks)
        result.samples[name] = len(split)
        empty = dict.fromkeys((t.name for t in bundle.tasks), 0)
        with ThreadPoolExecutor(workers) as pool, tqdm(total=len(split), unit="sample", desc=f"checking {name}",
                                                        disable=not progress, leave=False) as bar:
            for problem, present in pool.map(check, range(len(split))):
                bar.update()
                if problem:
                    result.problems.append(f"{name}: {problem}")
                for task, has_target in zip(empty, present or ()):
                    empty[task] += not has_target
        result.without_targets[name] = empty
    return result
