"""Documentation the tests keep true: every registry entry describes itself; `repeval list` and
`--help` show the summaries; the registry tables in docs/ are the registries' current ones; every
relative link and anchor in README.md and docs/ resolves; every `repeval` command in a fenced
bash block of docs/ runs here on tiny settings, or is marked as needing data or a GPU and then
uses only options its command's --help lists. The checkers are tested on planted faults."""

from __future__ import annotations

import glob
import re
import shlex
import shutil
from pathlib import Path

import pytest

from repeval.app.catalog import CATALOG, registry
from repeval.app.docs import render, stale
from repeval.app.entry import main

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"needs (data|a GPU|GPUs)")


# -- entries describe themselves ---------------------------------------------------------------

@pytest.mark.parametrize("what", list(CATALOG))
def test_every_registry_entry_has_a_summary_and_a_reference(what):
    for name, summary, reference in registry(what).table():
        assert summary.strip() and reference.strip(), f"{what} entry {name!r} lacks a summary or a reference"
        assert "\n" not in summary and len(summary) <= 100, f"{what} {name!r}: the summary must be one short line"


def test_repeval_list_shows_all_thirteen_methods_with_their_references(capsys):
    assert main(["list", "methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    methods = registry("methods")
    assert len(lines) == len(methods.names()) == 13
    for line, (name, summary, reference) in zip(lines, methods.table()):
        assert line.startswith(name) and summary in line and f"[{reference}]" in line


def test_help_lists_the_registered_entries_with_their_summaries(capsys):
    main(["train", "--help"])
    out = capsys.readouterr().out
    for what in ("methods", "datasets", "archs"):
        for name, summary, _ in registry(what).table():
            assert re.search(rf"^\s+{re.escape(name)}\s+{re.escape(summary)}$", out, re.M), (what, name)


# -- generated tables ----------------------------------------------------------------------------

def test_registry_tables_in_docs_are_current():
    assert stale() == [], "run: python -m repeval.app.docs"


def test_a_planted_stale_table_is_found(tmp_path):
    for page in (ROOT / "docs").glob("*.md"):
        shutil.copy(page, tmp_path / page.name)
    methods = tmp_path / "methods.md"
    methods.write_text(methods.read_text().replace("| `nash` | Nash bargaining", "| `nash` | an old summary"))
    assert stale(tmp_path) == [methods]
    assert render(methods.read_text()) == (ROOT / "docs" / "methods.md").read_text()


# -- links and anchors ---------------------------------------------------------------------------

def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def broken_links(page: Path) -> list[str]:
    text = re.sub(r"`[^`\n]*`", "", re.sub(r"```.*?```", "", page.read_text(), flags=re.S))
    problems = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            problems.append(f"{page.name}: {target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{page.name}: {target} (no such heading)")
    return problems


def test_every_relative_link_and_anchor_resolves():
    assert [p for page in PAGES for p in broken_links(page)] == []
    assert (ROOT / "docs" / "architecture.md") in PAGES and len(PAGES) >= 12


def test_a_planted_broken_link_and_anchor_are_found(tmp_path):
    (tmp_path / "target.md").write_text("# A title\n\n## Choosing λ\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](target.md#choosing-λ) [ok](target.md#a-title) [file](missing.md) [anchor](target.md#nowhere)\n"
                    "[web](https://example.org/x) `[not](code.md)`\n```\n[fenced](gone.md)\n```\n")
    assert broken_links(page) == ["page.md: missing.md (no such file)", "page.md: target.md#nowhere (no such heading)"]


# -- commands in docs/ ---------------------------------------------------------------------------

def doc_commands(page: Path) -> list[tuple[str, bool]]:
    """(command, marked as needing data or a GPU) for each `repeval` command in the page's bash
    blocks; `torchrun ... -m repeval ...` counts as its repeval part. A marker is in the line's
    own comment or in a comment line just above it."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), re.S):
        above = ""
        for line in re.sub(r"\s*\\\n\s*", " ", block).splitlines():
            code, _, comment = line.partition("#")
            if not code.strip():
                above = comment
                continue
            marked = bool(MARKER.search(comment) or MARKER.search(above))
            above = ""
            match = re.search(r"(?:^|-m )(repeval .*)$", code.strip())
            if match:
                out.append((re.sub(r"'.*$", "", match.group(1)).strip(), marked))
    return out


DOC_COMMANDS = [(page.name, cmd, marked) for page in sorted((ROOT / "docs").glob("*.md")) for cmd, marked in doc_commands(page)]
TINY = {  # what a tiny run of a docs command adds
    "multidigits": ["--epochs", "1", "--batch-size", "32", "--data-option", "n_train=192", "--data-option", "n_test=96"],
    "scenes": ["--epochs", "1", "--batch-size", "4", "--data-option", "n_train=8", "--data-option", "n_test=4",
               "--data-option", "size=32"],
}


def tiny(argv: list[str]) -> list[str]:
    command = argv[0]
    if command == "train" and "--resume" in argv:  # extend by one epoch, not to the docs' count
        return [("2" if previous == "--epochs" else a) for previous, a in zip(["", *argv], argv)]
    if command == "train":
        return argv + TINY[argv[1] if len(argv) > 1 and not argv[1].startswith("-") else "multidigits"]
    if command == "sweep":
        return argv + ["--dry-run"]
    if command == "reproduce":
        return argv + ["--smoke", "--no-progress"]
    return argv


def options(argv: list[str]) -> list[str]:
    return [a.split("=")[0] for a in argv if a.startswith("--")]


def test_doc_commands_are_found_and_a_planted_unmarked_one_is_run(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("```bash\nrepeval train multidigits --dgr   # embedded\n# a GPU machine (needs GPUs)\n"
                    "torchrun --nproc-per-node 4 -m repeval train nyuv2 --data-dir D \\\n    --dgr\n"
                    "repeval probe X   # needs data\nmake test\n```\n")
    assert doc_commands(page) == [("repeval train multidigits --dgr", False),
                                  ("repeval train nyuv2 --data-dir D --dgr", True), ("repeval probe X", True)]
    assert {cmd for _, cmd, _ in DOC_COMMANDS} >= {"repeval train multidigits --dgr", "repeval sweep sweeps/multidigits.toml"}


@pytest.mark.parametrize("page, command", [(p, c) for p, c, marked in DOC_COMMANDS if marked])
def test_marked_doc_commands_use_options_their_help_lists(page, command, capsys):
    argv = shlex.split(command)[1:]
    main([argv[0], "--help"])
    help_text = capsys.readouterr().out
    unknown = [o for o in options(argv) if not re.search(rf"(^|[\s/,]){re.escape(o)}\b", help_text)]
    assert unknown == [], f"{page}: `{command}` uses options `repeval {argv[0]} --help` does not list"


def test_unmarked_doc_commands_run_on_tiny_settings(tmp_path, monkeypatch):
    """In document order, in one sandbox: later commands read the runs earlier ones made
    (about 15 s on 2 cores)."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(ROOT / "sweeps", tmp_path / "sweeps")
    ran = []
    for page, command, marked in DOC_COMMANDS:
        if marked:
            continue
        argv = []
        for token in shlex.split(command)[1:]:
            matches = sorted(glob.glob(token)) if "*" in token else [token]
            assert matches, f"{page}: `{command}`: nothing matches {token} here"
            argv += matches
        code = main(tiny(argv) + (["--no-progress"] if argv[0] in ("train", "probe", "sweep") else []))
        assert code == 0, f"{page}: `{command}` exited {code} on tiny settings"
        ran.append(command)
    assert len(ran) >= 12
