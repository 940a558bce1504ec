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
from typing import Any

from repeval.errors import InvalidChoiceError
from repeval.registry import Registry

# scikit-learn loads inside the factories: the CLI lists and checks probe names without it.


def dino_weights(distances, temperature: float = 0.07):
    """Vote weights exp(similarity / T) from cosine distances (similarity = 1 - distance)."""
    import numpy as np

    return np.exp((1.0 - distances) / temperature)


@dataclass(frozen=True)
class ProbeSpec:
    """`make(seed)` builds the estimator; `grid` is what `--tune` searches (pipeline param names);
    `deterministic` probes give the same result for every seed, so they are fitted once."""

    name: str
    make: Callable[[int], Any]
    grid: dict = field(default_factory=dict)
    deterministic: bool = False
    summary: str = ""
    reference: str = ""


PROBES: Registry[ProbeSpec] = Registry("probe")


def _register(spec: ProbeSpec) -> None:
    PROBES.register(spec.name, summary=spec.summary, reference=spec.reference)(spec)


def _dt(seed: int):
    from sklearn.tree import DecisionTreeClassifier

    return DecisionTreeClassifier(random_state=seed)


def _scaled(make_estimator: Callable[[], Any]):
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), make_estimator())


def _svm(seed: int):
    from sklearn.svm import SVC

    return _scaled(SVC)


def _knn(seed: int):
    from sklearn.neighbors import KNeighborsClassifier

    return _scaled(KNeighborsClassifier)


def _logreg(seed: int):
    from sklearn.linear_model import LogisticRegression

    return _scaled(lambda: LogisticRegression(max_iter=1000, random_state=seed))


def _linsvm(seed: int):
    from sklearn.svm import LinearSVC

    return _scaled(lambda: LinearSVC(random_state=seed))


def _knn_cosine(seed: int):
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import Normalizer

    return make_pipeline(
        Normalizer(),
        KNeighborsClassifier(n_neighbors=20, metric="cosine", algorithm="brute", weights=partial(dino_weights, temperature=0.07)),
    )


SKLEARN = "scikit-learn defaults, as the DGR paper's probes most likely used"
_register(ProbeSpec("dt", _dt, grid={"max_depth": [None, 10, 20], "min_samples_leaf": [1, 5, 20]},
                    summary="decision tree", reference=SKLEARN))
_register(ProbeSpec("svm", _svm, grid={"svc__C": [0.1, 1.0, 10.0]}, deterministic=True,
                    summary="standardised features, RBF SVM (C = 1, gamma = scale)", reference=SKLEARN))
_register(ProbeSpec("knn", _knn, grid={"kneighborsclassifier__n_neighbors": [5, 10, 20, 50]}, deterministic=True,
                    summary="standardised features, 5 nearest neighbours (Euclidean)", reference=SKLEARN))
_register(ProbeSpec("logreg", _logreg, grid={"logisticregression__C": [0.001, 0.01, 0.1, 1.0, 10.0]},
                    summary="standardised features, logistic regression: the linear probe",
                    reference="the linear-probe protocol (e.g. Radford et al., 2021)"))
_register(ProbeSpec("linsvm", _linsvm, grid={"linearsvc__C": [0.001, 0.01, 0.1, 1.0]},
                    summary="standardised features, linear SVM", reference=SKLEARN))
_register(ProbeSpec("knn-cosine", _knn_cosine, grid={"kneighborsclassifier__n_neighbors": [10, 20, 100, 200]},
                    deterministic=True, summary="L2-normalised features, 20 neighbours by cosine, votes exp(sim / 0.07)",
                    reference="DINO's k-NN evaluation (Caron et al., ICCV 2021)"))


def parse_classifiers(text: str) -> tuple[str, ...]:
    """`"dt,svm,knn"` -> ("dt", "svm", "knn"), rejecting unknown names with the list."""
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise InvalidChoiceError(f"--classifiers is empty; choose from: {', '.join(PROBES.names())}")
    for name in names:
        PROBES.get(name)
    return names
