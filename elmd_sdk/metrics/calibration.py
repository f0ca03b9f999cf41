"""How far an app can trust a probability: expected calibration error (ECE) of the top label and its reliability
diagram (Guo et al., 2017). The n predictions are put in ``bins`` equal-width bins by the probability of their top
label (the confidence); ECE is the count-weighted mean gap between each bin's accuracy and its mean confidence, x100.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from elmd_sdk.metrics.figures import pyplot, save_png

BINS = 10


def reliability(probabilities: Sequence[Mapping[str, float]], gold: Sequence[str], bins: int = BINS) -> dict[str, Any]:
    """``{"ece", "bins": [{"lower", "upper", "count", "confidence", "accuracy"}, ...], "count"}`` of the top-label
    predictions ``probabilities`` against ``gold`` (ECE x100; a bin's confidence and accuracy None when empty)."""
    if len(probabilities) != len(gold) or not gold:
        raise ValueError("reliability needs one probability table per gold label, at least one")
    rows: list[list[tuple[float, bool]]] = [[] for _ in range(bins)]
    for table, label in zip(probabilities, gold, strict=True):
        top = max(table, key=table.__getitem__)
        rows[min(int(table[top] * bins), bins - 1)].append((table[top], top == label))
    table_rows = []
    gap = 0.0
    for i, members in enumerate(rows):
        confidence: float | None = None
        accuracy: float | None = None
        if members:
            confidence = sum(c for c, _ in members) / len(members)
            accuracy = sum(hit for _, hit in members) / len(members)
            gap += len(members) * abs(accuracy - confidence)
        table_rows.append(
            {
                "lower": i / bins,
                "upper": (i + 1) / bins,
                "count": len(members),
                "confidence": confidence,
                "accuracy": accuracy,
            }
        )
    return {"ece": 100.0 * gap / len(gold), "bins": table_rows, "count": len(gold)}


def write_reliability_png(diagrams: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Draw each named :func:`reliability` diagram (accuracy against confidence per bin, the diagonal is perfect
    calibration) side by side, with its ECE in the title."""
    plt = pyplot()

    figure, all_axes = plt.subplots(1, len(diagrams), figsize=(4.2 * len(diagrams), 4.0), squeeze=False)
    for axes, (name, diagram) in zip(all_axes[0], diagrams.items(), strict=True):
        filled = [row for row in diagram["bins"] if row["count"]]
        centres = [(row["lower"] + row["upper"]) / 2 for row in filled]
        width = 1.0 / len(diagram["bins"])
        axes.bar(centres, [row["accuracy"] for row in filled], width=width * 0.9, color="tab:blue", label="accuracy")
        points = ([row["confidence"] for row in filled], [row["accuracy"] for row in filled])
        axes.plot(*points, "o", color="tab:orange", label="(confidence, accuracy)")
        axes.plot([0, 1], [0, 1], "--", color="grey")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1)
        axes.set_xlabel("confidence (top label's probability)")
        axes.set_ylabel("accuracy")
        axes.set_title(f"{name}: ECE {diagram['ece']:.1f} (n = {diagram['count']})")
        axes.legend(loc="upper left", fontsize="small")
    return save_png(figure, path, dpi=100)
