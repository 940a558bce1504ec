"""The registry tables of `docs/`, generated: `python -m repeval.app.docs` rewrites every block

    <!-- registry: methods -->
    ...
    <!-- end registry -->

in docs/*.md with the registry's current table (`repeval.app.catalog.markdown_table`), and
`python -m repeval.app.docs --check` lists the stale ones and exits 1 (the test suite runs it)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from repeval.app.catalog import CATALOG, markdown_table

BLOCK = re.compile(r"(<!-- registry: (\w+) -->\n).*?(<!-- end registry -->)", re.S)
DOCS = Path(__file__).resolve().parents[1] / "docs"


def render(text: str) -> str:
    """`text` with every registry block filled from its registry."""
    def fill(match: re.Match) -> str:
        what = match.group(2)
        if what not in CATALOG:
            raise ValueError(f"unknown registry {what!r} in a docs block; choose from: {', '.join(CATALOG)}")
        return f"{match.group(1)}{markdown_table(what)}\n{match.group(3)}"
    return BLOCK.sub(fill, text)


def stale(docs: Path = DOCS) -> list[Path]:
    return [p for p in sorted(docs.glob("*.md")) if render(p.read_text()) != p.read_text()]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args == ["--check"]:
        old = stale()
        for path in old:
            print(f"{path}: a registry table is stale; run python -m repeval.app.docs", file=sys.stderr)
        return 1 if old else 0
    if args:
        print("usage: python -m repeval.app.docs [--check]", file=sys.stderr)
        return 2
    for path in stale():
        path.write_text(render(path.read_text()))
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
