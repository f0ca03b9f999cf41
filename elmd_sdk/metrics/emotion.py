"""Emotion scores on the paper's x100 scale: accuracy, macro- and weighted F1, per-label precision/recall/F1, the
confusion matrix, and the two reference points any emotion predictor must beat (majority class, demonstration)."""

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
    confusion = confusion_matrix(pred, gold, labels)
    return {**scores_from_confusion(confusion["counts"], labels), "emotion_confusion": confusion}


def scores_from_confusion(counts: Sequence[Sequence[int]], labels: Sequence[str]) -> dict[str, Any]:
    """:func:`emotion_scores` but the confusion matrix (its ``counts``: a row per gold label, a column per label
    then "none") from the counts alone, so a bootstrap resample's counts are scored by the same definition."""
    per_label: dict[str, float | None] = {}
    precision: dict[str, float | None] = {}
    recall: dict[str, float | None] = {}
    support: dict[str, int] = {}
    for j, label in enumerate(labels):
        tp = counts[j][j]
        fp = sum(row[j] for row in counts) - tp
        fn = sum(counts[j]) - tp
        support[label] = tp + fn
        per_label[label] = 100.0 * 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
        precision[label] = 100.0 * tp / (tp + fp) if tp + fp else None
        recall[label] = 100.0 * tp / (tp + fn) if tp + fn else None
    defined = [f1 for f1 in per_label.values() if f1 is not None]
    total = sum(support.values())
    return {
        "emotion_accuracy": 100.0 * sum(counts[j][j] for j in range(len(labels))) / total,
        "emotion_macro_f1": sum(defined) / len(defined),
        "emotion_weighted_f1": sum((per_label[label] or 0.0) * support[label] for label in labels) / total,
        "emotion_f1": per_label,
        "emotion_precision": precision,
        "emotion_recall": recall,
    }


def confusion_matrix(pred: Sequence[str | None], gold: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Counts of (gold row, predicted column) over ``labels``; predictions outside them go to a "none" column."""
    columns = [*labels, "none"]
    counts = [[0] * len(columns) for _ in labels]
    for p, g in zip(pred, gold, strict=True):
        counts[list(labels).index(g)][columns.index(p) if p is not None and p in labels else len(labels)] += 1
    return {"labels": list(labels), "columns": columns, "counts": counts}


def majority_label(support: Sequence[int], labels: Sequence[str]) -> str:
    """The most frequent gold label given each label's count (``support``, in ``labels``' order); ties go to the
    label listed first."""
    return labels[max(range(len(labels)), key=lambda j: (support[j], -j))]


def emotion_baselines(
    gold: Sequence[str], demonstration_emotions: Sequence[str | None], labels: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """Accuracy and macro-F1 of two predictors on the same samples: always the most frequent gold label
    ("majority"), and the response emotion e' of the retrieved demonstration ("demonstration", None without one)."""
    majority = majority_label([sum(g == label for g in gold) for label in labels], labels)
    out: dict[str, dict[str, Any]] = {}
    for name, pred in (("majority", [majority] * len(gold)), ("demonstration", list(demonstration_emotions))):
        scores = emotion_scores(pred, gold, labels)
        out[name] = {key: scores[key] for key in ("emotion_accuracy", "emotion_macro_f1", "emotion_weighted_f1")}
    out["majority"]["label"] = majority
    return out
