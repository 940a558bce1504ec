"""What the probing commands take, torch- and scikit-learn-free: the CLI checks its options
against these before loading anything."""

from __future__ import annotations

from dataclasses import dataclass

from repeval.defaults import HEAD_HIDDEN
from repeval.errors import InvalidChoiceError, check_number, check_seed
from repeval.probes.registry import PROBES

MAP_METHODS = ("tsne", "umap")  # 2-D maps of a representation
HEADS = ("linear", "mlp", "trained")  # head families of the universality measure
# Readings of the optimal head (probes/universality.py): chosen on held-out data (default), or
# fitted to the training split as Definition 2 is written.
READINGS = ("held-out", "train-fit")
MAP_MAX_POINTS = 3000  # test samples drawn in a 2-D map
EXTRACT_BATCH = 256  # images per forward pass when embeddings are extracted


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


@dataclass(frozen=True)
class UniversalityConfig:
    """The options of `UniversalityMeasure` (see it for each), checked before any extraction."""

    n_random: int = 10
    head: str = "linear"
    hidden: int = HEAD_HIDDEN
    optimal: str = "held-out"
    cv: int = 5
    l2_grid: tuple[float, ...] | None = None
    max_epochs: int = 30
    restarts: int | None = None
    tol: float = 1e-4
    max_iter: int = 1000
    standardize: bool = False
    seed: int = 0
    l2: float = 0.0

    def __post_init__(self) -> None:
        # Same checks as the estimator's fit, but before any embedding is extracted.
        self.measure()._validate()

    def measure(self):
        """The `UniversalityMeasure` estimator these options describe (loads torch)."""
        from repeval.probes.universality import UniversalityMeasure

        return UniversalityMeasure(n_random=self.n_random, head=self.head, hidden=self.hidden, optimal=self.optimal,
                                   cv=self.cv, l2_grid=self.l2_grid, max_epochs=self.max_epochs, restarts=self.restarts,
                                   tol=self.tol, max_iter=self.max_iter, standardize=self.standardize,
                                   random_state=self.seed, l2=self.l2)
