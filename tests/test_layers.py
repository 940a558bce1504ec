"""The folders are the layers, and imports point down only (shared/DESIGN.md):

    app/ (repeval.app: CLI, demo)      anything below
    training/ (repeval.training)       the core; never probes/
    probes/ (repeval.probes)           the core; never training/
    repeval/ (the core)                itself only
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"repeval": "core", "training": "training", "probes": "probes", "app": "app"}
ALLOWED = {
    "core": {"core"},
    "training": {"core", "training"},
    "probes": {"core", "probes"},
    "app": {"core", "training", "probes", "app"},
}
ENTRY_POINTS = {"repeval/__main__.py"}  # `python -m repeval` starts the top layer by design


def layer_of_module(name: str) -> str | None:
    parts = name.split(".")
    if parts[0] != "repeval":
        return None
    if len(parts) > 1 and parts[1] in ("training", "probes", "app"):
        return parts[1]
    return "core"


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every `repeval...` module a file imports, at any depth (function bodies, TYPE_CHECKING)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import; repeval imports absolutely"
            found.append((node.lineno, node.module or ""))
    return found


def library_files():
    for folder, layer in FOLDERS.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path, layer


@pytest.mark.parametrize(("path", "layer"), list(library_files()), ids=lambda v: str(v.relative_to(ROOT)) if isinstance(v, Path) else v)
def test_imports_point_down_only(path, layer):
    if str(path.relative_to(ROOT)) in ENTRY_POINTS:
        return
    wrong = [f"line {line}: {module} ({layer_of_module(module)})" for line, module in imports_of(path)
             if layer_of_module(module) not in (None, *ALLOWED[layer])]
    assert not wrong, f"{path.relative_to(ROOT)} ({layer}) imports from a layer it must not: {wrong}"


def test_the_walk_sees_every_layer_and_catches_a_bad_import(tmp_path):
    assert {layer for _, layer in library_files()} == set(FOLDERS.values())
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from repeval.probes.plots import embed_2d\n")
    assert [layer_of_module(m) for _, m in imports_of(bad)] == ["probes"]
    assert "probes" not in ALLOWED["training"] and "app" not in ALLOWED["core"]
