"""``curves.png``: a run's learning curves drawn from its ``metrics.jsonl`` (matplotlib, headless), written atomically.

Left: the training loss of each logging interval (and the validation loss, dashed) against the optimizer step.
Right: the validation metrics against the step: emotion macro-F1 and accuracy for REP/EERG, emotion match@1 for ERM.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from elmd_sdk.metrics.figures import pyplot, save_png
from elmd_sdk.trainers.metrics_log import CURVES_FILE, METRICS_FILE, read_metrics

__all__ = ["CURVES_FILE", "FIGURE_SIZE", "plot_curves", "write_curves"]

FIGURE_SIZE = (10.0, 4.0)  # inches at 100 dpi: a 1000 x 400 pixel picture
_DPI = 100
_FIRST = ("macro_f1", "accuracy", "match_macro", "match_micro")  # validation metrics in this order, then the rest
_NOT_PLOTTED = {"step", "kind", "time", "epoch", "loss"}  # the validation loss goes on the left panel


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _series(records: list[dict[str, Any]], kind: str, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` in the ``kind`` records that have a number for it, by step."""
    points = sorted((r["step"], float(r[key])) for r in records if r["kind"] == kind and _number(r.get(key)))
    return [s for s, _ in points], [v for _, v in points]


def plot_curves(metrics: str | Path, out_png: str | Path, *, title: str | None = None) -> Path | None:
    """Draw ``metrics`` (a metrics.jsonl) into ``out_png``; None, writing nothing, when it holds nothing to plot."""
    records = read_metrics(metrics)
    valid_keys = {k for r in records if r["kind"] == "valid" for k, v in r.items() if _number(v)} - _NOT_PLOTTED
    names = [k for k in _FIRST if k in valid_keys] + sorted(valid_keys - set(_FIRST))
    train_loss = _series(records, "train", "loss")
    valid_loss = _series(records, "valid", "loss")
    if not (train_loss[0] or valid_loss[0] or names):
        return None

    plt = pyplot()

    figure, (left, right) = plt.subplots(1, 2, figsize=FIGURE_SIZE)
    if train_loss[0]:
        left.plot(*train_loss, label="train loss", marker="o" if len(train_loss[0]) <= 30 else None, markersize=3)
    if valid_loss[0]:
        left.plot(*valid_loss, "--", marker="o", markersize=3, label="valid loss")
    left.set_title("loss")
    for name in names:
        right.plot(*_series(records, "valid", name), marker="o", markersize=3, label=name)
    right.set_title("validation")
    if not names:
        right.text(0.5, 0.5, "no validation metrics", ha="center", va="center", transform=right.transAxes)
    values = [v for name in names for v in _series(records, "valid", name)[1] if math.isfinite(v)]
    if values and min(values) >= 0.0 and max(values) <= 1.0:
        right.set_ylim(0.0, 1.0)
    for axes in (left, right):
        axes.set_xlabel("optimizer step")
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend()
    if title:
        figure.suptitle(title)
    return save_png(figure, out_png, dpi=_DPI)


def write_curves(out_dir: str | Path, *, title: str | None = None) -> Path | None:
    """``OUT/curves.png`` from ``OUT/metrics.jsonl`` where that file exists and holds something to plot, else None."""
    out_dir = Path(out_dir)
    if not (out_dir / METRICS_FILE).is_file():
        return None
    return plot_curves(out_dir / METRICS_FILE, out_dir / CURVES_FILE, title=title)
