"""Probes by short name. Each is a scikit-learn estimator (a pipeline) with scikit-learn's
defaults, since that is what the paper most likely used, and a small grid for `--tune`.

| name | estimator |
|---|---|
| dt | DecisionTreeClassifier() |
| svm | StandardScaler + SVC() (RBF, C=1, gamma="scale") |
| knn | StandardScaler + KNeighborsClassifier() (k=5, uniform votes, Euclidean) |
| logreg | StandardScaler + LogisticRegression(max_iter=1000): the linear probe |
| linsvm | StandardScaler + LinearSVC() |
| knn-cosine | L2 normalisation + KNeighborsClassifier(k=20, cosine), votes weighted exp(sim/0.07): DINO |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.tree import DecisionTreeClassifier

from repeval.errors import InvalidChoiceError
from repeval.registry import Registry


def dino_weights(distances: np.ndarray, temperature: float = 0.07) -> np.ndarray:
    """Vote weights exp(similarity / T) from cosine distances (similarity = 1 - distance)."""
    return np.exp((1.0 - distances) / temperature)


@dataclass(frozen=True)
class ProbeSpec:
    """`make(seed)` builds the estimator; `grid` is what `--tune` searches (pipeline param names);
    `deterministic` probes give the same result for every seed, so they are fitted once."""

    name: str
    make: Callable[[int], BaseEstimator]
    grid: dict = field(default_factory=dict)
    deterministic: bool = False


PROBES: Registry[ProbeSpec] = Registry("probe")


def _register(spec: ProbeSpec) -> None:
    PROBES.register(spec.name)(spec)


_register(ProbeSpec(
    "dt", lambda seed: DecisionTreeClassifier(random_state=seed),
    grid={"max_depth": [None, 10, 20], "min_samples_leaf": [1, 5, 20]},
))
_register(ProbeSpec(
    "svm", lambda seed: make_pipeline(StandardScaler(), SVC()),
    grid={"svc__C": [0.1, 1.0, 10.0]}, deterministic=True,
))
_register(ProbeSpec(
    "knn", lambda seed: make_pipeline(StandardScaler(), KNeighborsClassifier()),
    grid={"kneighborsclassifier__n_neighbors": [5, 10, 20, 50]}, deterministic=True,
))
_register(ProbeSpec(
    "logreg", lambda seed: make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=seed)),
    grid={"logisticregression__C": [0.001, 0.01, 0.1, 1.0, 10.0]},
))
_register(ProbeSpec(
    "linsvm", lambda seed: make_pipeline(StandardScaler(), LinearSVC(random_state=seed)),
    grid={"linearsvc__C": [0.001, 0.01, 0.1, 1.0]},
))
_register(ProbeSpec(
    "knn-cosine",
    lambda seed: make_pipeline(
        Normalizer(),
        KNeighborsClassifier(n_neighbors=20, metric="cosine", algorithm="brute", weights=partial(dino_weights, temperature=0.07)),
    ),
    grid={"kneighborsclassifier__n_neighbors": [10, 20, 100, 200]}, deterministic=True,
))


def parse_classifiers(text: str) -> tuple[str, ...]:
    """`"dt,svm,knn"` -> ("dt", "svm", "knn"), rejecting unknown names with the list."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise InvalidChoiceError(f"--classifiers is empty; choose from: {', '.join(PROBES.names())}")
    for name in names:
        PROBES.get(name)
    return names
