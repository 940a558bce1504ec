"""The `make demo` report: one document, as Markdown (`report.md`) and as self-contained HTML
(`report.html`, figures embedded), built from the same blocks. repeval writes its own tiny
renderer because both formats are fully under its control; no Markdown library needed."""

from __future__ import annotations

import base64
import html
import os
from pathlib import Path

from repeval.storage import atomic_write

# A block is ("h1"|"h2"|"p", text), ("table", header, rows) or ("img", path relative to the
# report, caption).


def to_markdown(blocks: list[tuple]) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            out.append(("# " if kind == "h1" else "## ") + block[1])
        elif kind == "p":
            out.append(block[1])
        elif kind == "table":
            header, rows = block[1], block[2]
            out.append("\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
                                  *("| " + " | ".join(map(str, r)) + " |" for r in rows)]))
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})\n\n*{block[2]}*")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[tuple], root: Path, title: str) -> str:
    body = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(block[1]).replace('`', '')}</p>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in block[2])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "img":
            data = base64.b64encode((root / block[1]).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(block[2])}</figcaption></figure>")
    style = ("body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.45}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
             "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
             "figcaption{color:#555;font-size:.9em}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def write_report(blocks: list[tuple], out_dir: str | os.PathLike, title: str) -> tuple[Path, Path]:
    """Write `report.md` and `report.html` (figures embedded) into `out_dir`."""
    out_dir = Path(out_dir)
    md = atomic_write(out_dir / "report.md", lambda f: f.write(to_markdown(blocks).encode()))
    page = atomic_write(out_dir / "report.html", lambda f: f.write(to_html(blocks, out_dir, title).encode()))
    return md, page
