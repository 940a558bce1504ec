"""Read every sample of a dataset once and list every file that does not fit its format
(`repeval check-data`), for people who want to know before a 300-epoch run.

Training refuses a bad sample the moment it reads one (a `DataError` naming the file), rather
than skipping it: a skipped file silently changes the split that every number is reported on.
UTKFace is the exception its official protocol makes: files whose names do not parse and images
that do not decode are left out, counted and reported (`DatasetBundle.report`); they are listed
here as well."""

from __future__ import annotations

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
    """What `scan` found: samples read per split, and one line per bad file."""

    samples: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        counts = ", ".join(f"{n} {split}" for split, n in self.samples.items())
        skipped = f"; {len(self.skipped)} file(s) left out by the dataset's protocol" if self.skipped else ""
        verdict = "no problem found" if self.clean else f"{len(self.problems)} bad sample(s)"
        return f"checked {sum(self.samples.values())} samples ({counts}): {verdict}{skipped}"


def sample_check(split, tasks) -> Callable[[int], str | None]:
    """A function of a sample index: what is wrong with it, or None. Splits that read files per
    sample (`load`) check what they read; in-memory ones check their labels against the tasks."""
    if hasattr(split, "load"):
        def check(i: int) -> str | None:
            try:
                split.load(i)
            except RepevalError as e:
                return str(e)
            return None
        return check
    kinds = [kind_of(t) for t in tasks]

    def check_labels(i: int) -> str | None:
        for k, (task, kind) in enumerate(zip(tasks, kinds)):
            problem = kind.target_problem(np.asarray(split.labels[i, k:k + 1]))
            if problem:
                return f"sample {int(split.indices[i])}: the {task.name} label has {problem}"
        return None
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
        with ThreadPoolExecutor(workers) as pool, tqdm(total=len(split), unit="sample", desc=f"checking {name}",
                                                        disable=not progress, leave=False) as bar:
            for problem in pool.map(check, range(len(split))):
                bar.update()
                if problem:
                    result.problems.append(f"{name}: {problem}")
    return result
