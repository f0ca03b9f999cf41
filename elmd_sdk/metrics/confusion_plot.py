"""The confusion matrix of a report as a PNG picture (matplotlib, headless), written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from elmd_sdk.metrics.figures import pyplot, save_png


def write_confusion_png(confusion: dict[str, Any], path: str | Path, title: str = "response emotion") -> Path:
    """Draw ``confusion`` (:func:`~elmd_sdk.metrics.emotion.confusion_matrix`'s dict) with row-normalised shading and
    the counts in the cells; gold labels down, predictions across."""
    plt = pyplot()

    labels, columns, counts = confusion["labels"], confusion["columns"], confusion["counts"]
    shares = [[c / max(sum(row), 1) for c in row] for row in counts]
    figure, axes = plt.subplots(figsize=(1.0 + 0.75 * len(columns), 1.0 + 0.65 * len(labels)))
    axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set_xticks(range(len(columns)), columns, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    axes.set_title(title)
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            axes.text(j, i, str(count), ha="center", va="center", color="white" if shares[i][j] > 0.5 else "black")
    return save_png(figure, path, dpi=100)
