"""Validation of REP/EERG: response-emotion accuracy and macro-F1, plus the mean answer-token loss.

The emotion is predicted by closed-set decoding: every label's REP answer (``render_answer(label)``, e.g.
"Emotion: sad") is scored by its total log-likelihood after the full prompt, and the best-scoring label wins. This
is the argmax of p(e | I, B, H, u, E_v, R) that Eq. 10 trains, and unlike first-token logits it stays exact when
labels share their first token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from elmd_sdk.trainers.examples import Example
from elmd_sdk.trainers.stage_model import StageModel

from elmd_sdk.data.records import VideoRef


@dataclass(frozen=True)
class ScoredExample:
    """One validation example's outcome: predicted label, gold label, and the NLL of its own answer."""

    index: int
    predicted: int
    gold: int
    nll: float
    tokens: int


def emotion_metrics(gold: Sequence[int], predicted: Sequence[int]) -> tuple[float, float]:
    """(accuracy, macro-F1); F1 is averaged over the labels that occur in ``gold`` or ``predicted``."""
    if len(gold) != len(predicted) or not gold:
        raise ValueError("emotion metrics need equally many gold and predicted labels, at least one")
    accuracy = sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold)
    scores = []
    for label in sorted(set(gold) | set(predicted)):
        hits = sum(g == p == label for g, p in zip(gold, predicted, strict=True))
        wanted, chosen = sum(g == label for g in gold), sum(p == label for p in predicted)
        scores.append(2 * hits / (wanted + chosen))  # F1 = 2 TP / (2 TP + FP + FN)
    return accuracy, sum(scores) / len(scores)


@torch.no_grad()
def score_examples(
    model: StageModel,
    examples: Sequence[Example],
    indices: Sequence[int],
    candidates: Sequence[Sequence[int]],
    video_features: Callable[[VideoRef], torch.Tensor],
    rows_per_batch: int,
) -> list[ScoredExample]:
    """Predict the emotion of ``examples[i]`` for each i in ``indices`` and score its own answer.

    Each example contributes one row per label candidate and one row with its target; rows run in batches of
    ``rows_per_batch``. ``video_features`` maps a clip to its pooled V_c ``(m + o, q)``.
    """
    rows: list[tuple[int, Sequence[int]]] = []
    for i in indices:
        rows += [(i, candidate) for candidate in candidates]
        rows.append((i, examples[i].target))
    nll: list[float] = []
    for start in range(0, len(rows), rows_per_batch):
        chunk = rows[start : start + rows_per_batch]
        pieces = [examples[i].pieces for i, _ in chunk]
        clips = [examples[i].video for i, _ in chunk]
        videos = [None if clip is None else video_features(clip) for clip in clips]
        nll += model(pieces, videos, [target for _, target in chunk]).tolist()
    width = len(candidates) + 1
    out = []
    for k, i in enumerate(indices):
        scores = nll[k * width : k * width + len(candidates)]
        best = min(range(len(scores)), key=scores.__getitem__)  # lowest NLL = highest likelihood
        out.append(ScoredExample(i, best, examples[i].label, nll[k * width + width - 1], len(examples[i].target)))
    return out
