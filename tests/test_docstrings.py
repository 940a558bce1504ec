"""The examples in the public docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "repeval.registry", "repeval.errors", "repeval.datasets", "repeval.datasets.multidigits",
    "repeval.probes.embeddings", "repeval.probes.suite", "repeval.probes.universality", "repeval.metrics",
    "repeval.training.config", "repeval.training.dgr", "repeval.validation", "repeval.probes.config",
    "repeval.models", "repeval.stats", "repeval.heads", "repeval.kinds", "repeval.tasks", "repeval.datasets.scenes",
    "repeval.training.run", "repeval.training.columns", "repeval.archs",
]  # modules whose examples need trained runs mark them +SKIP and are not listed


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
    assert result.attempted > 0, f"{name} has no runnable example"
