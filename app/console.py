"""Terminal output shared by the CLI and the demo."""

from __future__ import annotations

import sys


def console():
    """A rich console; wide when output goes to a file or pipe, where rich would assume 80
    columns and fold every table."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=160)


def progress_default() -> bool:
    """Progress bars only on a terminal: redirected to a file they are thousands of lines."""
    return sys.stderr.isatty()
