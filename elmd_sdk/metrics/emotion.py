"""Accuracy and macro-F1 of the predicted response emotion against the gold one, on the paper's x100 scale."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from elmd_sdk.errors import InputError


def emotion_scores(pred: Sequence[str | None], gold: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro-F1 and per-label F1 (all x100) of ``pred`` against ``gold`` over ``labels``.

    A prediction of None (the model gave no emotion) or outside ``labels`` is wrong and counts against
    the gold label's recall only. Per label, F1 = 2TP / (2TP + FP + FN): 0 for a label that is predicted
    or gold but never both, None for a label that is neither (left out of the macro average).
    """
    if len(pred) != len(gold) or not gold:
        raise InputError(f"need as many predicted as gold emotions, at least one (got {len(pred)} and {len(gold)})")
    if unknown := sorted(set(gold) - set(labels)):
        raise InputError(f"gold emotion(s) {', '.join(map(repr, unknown))} not in the label set {list(labels)}")
    per_label: dict[str, float | None] = {}
    for label in labels:
        tp = sum(p == label and g == label for p, g in zip(pred, gold, strict=True))
        fp = sum(p == label and g != label for p, g in zip(pred, gold, strict=True))
        fn = sum(p != label and g == label for p, g in zip(pred, gold, strict=True))
        per_label[label] = 100.0 * 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    defined = [f1 for f1 in per_label.values() if f1 is not None]
    return {
        "emotion_accuracy": 100.0 * sum(p == g for p, g in zip(pred, gold, strict=True)) / len(gold),
        "emotion_macro_f1": sum(defined) / len(defined),
        "emotion_f1": per_label,
    }
