"""Low-level figure saving, shared by every layer that draws (each layer draws its own figures)."""

from __future__ import annotations

import os
from pathlib import Path

from repeval.storage import atomic_write


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend: figures go to files, on any machine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, out_stem: str | os.PathLike) -> None:
    """`out_stem`.png and .svg, each written atomically; the figure is closed."""
    out_stem = Path(out_stem)
    for ext in ("png", "svg"):
        atomic_write(out_stem.with_suffix(f".{ext}"), lambda f, ext=ext: fig.savefig(f, format=ext, dpi=120, bbox_inches="tight"))
    pyplot().close(fig)
