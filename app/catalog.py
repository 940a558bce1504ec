"""What repeval has, by registry: `repeval list`, the summaries in `--help`, and the tables of
`docs/` (`python -m repeval.app.docs`). Torch-free: every registry names and describes its
entries without importing them."""

from __future__ import annotations

import typer

from repeval.registry import Registry

# `repeval list WHAT` -> (registry module, attribute), imported on demand.
CATALOG = {
    "methods": ("repeval.training.methods", "METHODS"),
    "datasets": ("repeval.datasets", "DATASETS"),
    "kinds": ("repeval.kinds", "KINDS"),
    "archs": ("repeval.archs", "ARCHS"),
    "probes": ("repeval.probes.registry", "PROBES"),
}


def registry(what: str) -> Registry:
    import importlib

    module, attribute = CATALOG[what]
    return getattr(importlib.import_module(module), attribute)


def text_table(what: str) -> str:
    """Aligned columns: name, summary, reference."""
    rows = registry(what).table()
    width = max(len(name) for name, _, _ in rows)
    return "\n".join(f"{name:<{width}}  {summary}  [{reference}]" for name, summary, reference in rows)


def markdown_table(what: str) -> str:
    head = {"methods": "method", "datasets": "dataset", "kinds": "kind", "archs": "architecture", "probes": "probe"}[what]
    lines = [f"| {head} | what it is | follows |", "|---|---|---|"]
    lines += [f"| `{name}` | {summary} | {reference} |" for name, summary, reference in registry(what).table()]
    return "\n".join(lines)


def help_epilog(*whats: str) -> str:
    """Blocks for a command's --help: each registry's names and summaries, one per line (click
    keeps a paragraph that starts with \\b as it is)."""
    blocks = []
    for what in whats:
        entries = registry(what).table()
        width = max(len(name) for name, _, _ in entries)
        blocks.append("\b\n" + f"{what.capitalize()} (repeval list {what}):\n"
                      + "\n".join(f"  {name:<{width}}  {summary}" for name, summary, _ in entries))
    return "\n\n".join(blocks)


def list_entries(what: str = typer.Argument("all", help="methods, datasets, kinds, archs, probes or all.")) -> None:
    """What repeval has: methods, datasets, task kinds, architectures and probes, each with a
    one-line summary and the paper or code it follows. WHAT: methods, datasets, kinds, archs,
    probes or all."""
    from repeval.errors import check_choice

    check_choice("repeval list", "what", what, ("all", *CATALOG))
    for i, name in enumerate(CATALOG if what == "all" else [what]):
        if what == "all":
            typer.echo(("\n" if i else "") + f"{name}:")
        typer.echo(text_table(name))
