"""Fit probes on frozen train embeddings and score them on test embeddings.

Every (embedding set, task, classifier, seed) fit is independent: they run in parallel threads
(`jobs`), sharing the arrays instead of copying them. `tune` picks hyperparameters by
cross-validation on the training split only; the test split is passed to nothing but `predict`.
"""

from __future__ import annotations

import contextlib
import time

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.svm import SVC
from threadpoolctl import threadpool_limits

from repeval import __version__
from repeval.probes.embeddings import EmbeddingSet
from repeval.probes.config import ProbeConfig  # noqa: F401 - re-exported
from repeval.probes.registry import PROBES, ProbeSpec
from repeval.probes.svm import SharedRBFGram, gram_bytes


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro")),
    }


def fit_predict(
    estimator: BaseEstimator, x_train, y_train, x_test, grid: dict | None, cv: int, seed: int
) -> tuple[np.ndarray, dict, float, float]:
    """Fit (tuning on the training arrays only when `grid`), then predict the test arrays."""
    started = time.perf_counter()
    chosen: dict = {}
    if grid:
        folds = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)
        search = GridSearchCV(estimator, grid, cv=folds, n_jobs=1, refit=True).fit(x_train, y_train)
        estimator, chosen = search.best_estimator_, dict(search.best_params_)
    else:
        estimator.fit(x_train, y_train)
    fitted = time.perf_counter()
    predicted = estimator.predict(x_test)
    return predicted, chosen, fitted - started, time.perf_counter() - fitted


def _probe_job(emb: EmbeddingSet, k: int, spec: ProbeSpec, seed: int, config: ProbeConfig, gram: SharedRBFGram | None):
    y_train, y_test = emb.train.labels[:, k], emb.test.labels[:, k]
    if gram is not None:
        estimator: BaseEstimator = SVC(kernel="precomputed")
        grid = {"C": spec.grid["svc__C"]} if config.tune else None
        pred, chosen, t_fit, t_pred = fit_predict(estimator, gram.train, y_train, gram.test, grid, config.cv, seed)
        params = f"StandardScaler + SVC(C={chosen.get('C', 1.0)}, kernel=rbf, gamma={gram.gamma:.6g}) [shared Gram]"
    else:
        estimator = spec.make(seed)
        grid = spec.grid if config.tune else None
        pred, chosen, t_fit, t_pred = fit_predict(
            estimator, emb.train.features, y_train, emb.test.features, grid, config.cv, seed)
        params = repr(estimator.set_params(**chosen)).replace("\n", " ")
        params = " ".join(params.split())
    return {
        "task": emb.tasks[k].name, "classifier": spec.name, "params": params, "tuned": chosen,
        **scores(y_test, pred), "fit_seconds": round(t_fit, 4), "predict_seconds": round(t_pred, 4),
    }


def run_probes(sets: list[EmbeddingSet], config: ProbeConfig) -> list[dict]:
    """One result row per (embedding set, task, classifier, seed), scored on the test split.

    >>> import numpy as np
    >>> from repeval.probes.embeddings import EmbeddingSet
    >>> x = np.random.default_rng(0).normal(size=(40, 3)); y = (x[:, 0] > 0).astype(int)
    >>> s = EmbeddingSet.from_arrays("demo", x[:30], y[:30], x[30:], y[30:])
    >>> rows = run_probes([s], ProbeConfig(classifiers=("knn",)))
    >>> rows[0]["task"], rows[0]["classifier"], rows[0]["accuracy"] > 0.5
    ('task0', 'knn', True)
    """
    rows = []
    for emb in sets:
        specs = [PROBES.get(name) for name in config.classifiers]
        gram = None
        if "svm" in config.classifiers and gram_bytes(len(emb.train.labels), len(emb.test.labels)) <= config.svm_memory_gb * 2**30:
            gram = SharedRBFGram(emb.train.features, emb.test.features)
        jobs = [
            (k, spec, seed)
            for spec in specs
            for seed in (config.seeds[:1] if spec.deterministic and not config.tune else config.seeds)
            for k in range(len(emb.tasks))
        ]
        # Parallel fits each run single-threaded: BLAS/OpenMP pools inside concurrent fits
        # oversubscribe the cores, and OpenBLAS called from OpenMP loops in two threads may hang.
        with threadpool_limits(limits=1) if config.jobs != 1 else contextlib.nullcontext():
            results = Parallel(n_jobs=config.jobs, backend="threading")(
                delayed(_probe_job)(emb, k, spec, seed, config, gram if spec.name == "svm" else None)
                for k, spec, seed in jobs
            )
        del gram
        for (_task, spec, seed), result in zip(jobs, results):
            # A deterministic probe's one fit stands for every requested seed.
            seeds = config.seeds if spec.deterministic and not config.tune else (seed,)
            for s in seeds:
                rows.append({
                    "checkpoint": emb.source.name, "checkpoint_hash": emb.source.key,
                    "dataset": emb.source.dataset, "split": "test", "seed": s, **result,
                    "repeval_version": __version__,
                })
    return rows
