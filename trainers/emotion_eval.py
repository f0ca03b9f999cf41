"""Validation of REP/EERG: response-emotion accuracy and macro-F1, plus the mean answer-token loss.

The emotion is predicted by closed-set decoding with the chat model's own scorer
(:func:`elmd_sdk.models.decoding.score_continuations`): every label's REP answer (``render_answer(label)``, e.g.
"Emotion: sad") is scored by its total log-likelihood after the full prompt. The raw choice is the argmax of
p(e | I, B, H, u, E_v, R) that Eq. 10 trains; the calibrated choice, what inference makes, first divides by the
model's prior on the validation prompts (batch calibration, :func:`~elmd_sdk.models.closed_set.batch_log_prior`).
Unlike first-token logits the scores stay exact when labels share their first token. The example's own target is
scored in the same pass (its NLL is the validation loss).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from elmd_sdk.data.records import VideoRef
from elmd_sdk.models.splice import splice_video_embeds
from elmd_sdk.trainers.examples import Example
from elmd_sdk.trainers.stage_model import StageModel


@dataclass(frozen=True)
class ScoredExample:
    """One validation example's outcome: every label's log-likelihood, gold label, and the NLL of its own answer."""

    index: int
    scores: tuple[float, ...]  # (L,) log-likelihood of each label's answer line
    gold: int
    nll: float
    tokens: int

    @property
    def predicted(self) -> int:
        """The raw choice: the label whose answer line is most likely."""
        return max(range(len(self.scores)), key=self.scores.__getitem__)


def emotion_metrics(gold: Sequence[int], predicted: Sequence[int]) -> tuple[float, float]:
    """(accuracy, macro-F1) as fractions, by :func:`~elmd_sdk.metrics.emotion.emotion_scores` (what ``elmd-sdk eval``
    reports x100): F1 is averaged over the labels that occur in ``gold`` or ``predicted``."""
    from elmd_sdk.metrics.emotion import emotion_scores

    labels = [str(label) for label in sorted(set(gold) | set(predicted))]
    scores = emotion_scores([str(p) for p in predicted], [str(g) for g in gold], labels)
    return scores["emotion_accuracy"] / 100, scores["emotion_macro_f1"] / 100


@torch.no_grad()
def score_examples(
    model: StageModel,
    examples: Sequence[Example],
    indices: Sequence[int],
    candidates: Sequence[Sequence[int]],
    video_features: Callable[[VideoRef], torch.Tensor],
) -> list[ScoredExample]:
    """Score every label's answer line for ``examples[i]``, each i in ``indices``, and its own answer.

    Each prompt (with its clip's E_v spliced in) is encoded once; the label candidates and the example's target
    are then scored over its KV cache in one batched pass. ``video_features`` maps a clip to its pooled V_c
    ``(m + o, q)``.
    """
    from elmd_sdk.models.decoding import prefill, score_continuations  # imports transformers: only when validating

    embed_tokens = model.llm.get_input_embeddings()
    out = []
    for i in indices:
        example = examples[i]
        e_v = [] if example.video is None else [model.video_tokens(video_features(example.video))]
        spliced = splice_video_embeds(embed_tokens, [list(p) for p in example.pieces], e_v)
        context = prefill(model.llm, spliced.attention_mask, inputs_embeds=spliced.inputs_embeds)
        scores = score_continuations(model.llm, context, [*candidates, example.target]).tolist()  # (L + 1,)
        out.append(ScoredExample(i, tuple(scores[:-1]), example.label, -scores[-1], len(example.target)))
    return out
