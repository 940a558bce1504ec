"""What the probing commands take, torch- and scikit-learn-free: the CLI checks its options
against these before loading anything."""

from __future__ import annotations

from dataclasses import dataclass

from repeval.errors import InvalidChoiceError, check_number, check_seed
from repeval.probes.registry import PROBES

MAP_METHODS = ("tsne", "umap")  # 2-D maps of a representation
HEADS = ("linear", "mlp", "trained")  # head families of the universality measure


@dataclass(frozen=True)
class ProbeConfig:
    """What `run_probes` fits: classifiers (registry names), seeds, `--tune` (CV on the training
    split), parallel `jobs`; `svm_memory_gb` budgets the shared RBF Gram matrices of `svm`.

    >>> ProbeConfig(classifiers=("dt", "knn"), seeds=(0, 1, 2)).classifiers
    ('dt', 'knn')
    """

    classifiers: tuple[str, ...] = ("dt", "svm", "knn")
    seeds: tuple[int, ...] = (0,)
    tune: bool = False
    cv: int = 3
    jobs: int = 1
    svm_memory_gb: float = 8.0

    def __post_init__(self) -> None:
        for name in self.classifiers:
            PROBES.get(name)
        if not self.seeds:
            raise InvalidChoiceError("The 'seeds' parameter of ProbeConfig must list at least one seed. Got () instead.")
        for seed in self.seeds:
            check_seed("ProbeConfig", "seeds", seed)
        check_number("ProbeConfig", "cv", self.cv, kind=int, low=2)
        if self.jobs != -1:
            check_number("ProbeConfig", "jobs", self.jobs, kind=int, low=1)
        check_number("ProbeConfig", "svm_memory_gb", self.svm_memory_gb, low=0.0)
