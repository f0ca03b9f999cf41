"""The pictures elmd-sdk draws (matplotlib, headless): one way to get pyplot and one way to write a PNG atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from elmd_sdk.io import atomic_open


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(figure: Any, path: str | Path, dpi: int = 100) -> Path:
    """Lay out ``figure``, write it to ``path`` as a PNG atomically, and close it (also when writing fails)."""
    figure.tight_layout()
    try:
        with atomic_open(path, "wb") as fh:
            figure.savefig(fh, format="png", dpi=dpi)
    finally:
        pyplot().close(figure)
    return Path(path)
