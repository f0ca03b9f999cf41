"""All of the paper's automatic metrics (4.4) for a set of generations, with the metadata a report needs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from elmd_sdk.data.labels import EMOTIONS
from elmd_sdk.errors import InputError
from elmd_sdk.metrics.average import mean_x100
from elmd_sdk.metrics.bleu import BLEU_METHOD, sentence_bleu_scores
from elmd_sdk.metrics.emotion import emotion_scores
from elmd_sdk.metrics.meteor import METEOR_METHOD, load_wordnet, meteor_scores
from elmd_sdk.metrics.options import TextMetricOptions
from elmd_sdk.metrics.rouge import ROUGE_METHODS, rouge_scores
from elmd_sdk.metrics.tokenize import CHARACTERS, TOKENIZATION, characters, check_language, tokenize

TEXT_METRICS: tuple[str, ...] = ("bleu_2", "bleu_4", "meteor", "rouge_1", "rouge_l")
"""The text metrics, each the mean x100 of one score per (generation, reference) pair."""


def pair_scores(
    hyps: Sequence[str],
    refs: Sequence[str],
    language: str,
    *,
    meteor_synonyms: bool = True,
    text_metrics: TextMetricOptions | None = None,
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Each pair's BLEU-2/4, METEOR and ROUGE-1/L F (fractions, keyed as :data:`TEXT_METRICS`), and how they were
    computed (the metadata :func:`score_generations` writes into a report); arguments as there."""
    check_language(language)
    text_metrics = text_metrics or TextMetricOptions()
    text_metrics.validate()
    if len(hyps) != len(refs) or not refs:
        raise InputError(f"need as many generations as references, at least one (got {len(hyps)} and {len(refs)})")
    hyp_words = [tokenize(h, language) for h in hyps]
    ref_words = [tokenize(r, language) for r in refs]
    bleu_tokens = text_metrics.bleu_tokens(language)
    if bleu_tokens == "chars":
        hyp_bleu, ref_bleu = [characters(h) for h in hyps], [characters(r) for r in refs]
    else:
        hyp_bleu, ref_bleu = hyp_words, ref_words
    counting = text_metrics.rouge_counting(language)
    source = load_wordnet() if meteor_synonyms and language == "en" else None
    scores = {
        "bleu_2": sentence_bleu_scores(hyp_bleu, ref_bleu, 2),
        "bleu_4": sentence_bleu_scores(hyp_bleu, ref_bleu, 4),
        "meteor": meteor_scores(hyp_words, ref_words, source.wordnet if source else None),
        **rouge_scores(hyp_words, ref_words, counting=counting),
    }
    method = {
        "scale": 100,
        "tokenization": TOKENIZATION[language],
        "bleu_tokens": bleu_tokens,
        "bleu_tokenization": CHARACTERS if bleu_tokens == "chars" else TOKENIZATION[language],
        "bleu_method": BLEU_METHOD,
        "meteor_method": METEOR_METHOD,
        "meteor_synonyms": source is not None,
        "wordnet_source": source.origin if source else None,
        "rouge_counting": counting,
        "rouge_tokenization": TOKENIZATION[language],
        "rouge_method": ROUGE_METHODS[counting],
    }
    return scores, method


def score_generations(
    hyps: Sequence[str],
    refs: Sequence[str],
    language: str,
    pred_emotions: Sequence[str | None] | None = None,
    gold_emotions: Sequence[str] | None = None,
    labels: Sequence[str] = EMOTIONS,
    *,
    meteor_synonyms: bool = True,
    text_metrics: TextMetricOptions | None = None,
) -> dict[str, Any]:
    """BLEU-2/4, METEOR, ROUGE-1/L F (x100) of ``hyps`` against ``refs``, plus emotion accuracy and macro-F1.

    ``language`` (``"en"``/``"zh"``) picks the tokenization; ``text_metrics`` picks Chinese BLEU's tokens and
    ROUGE-1's counting (None: :class:`~elmd_sdk.metrics.options.TextMetricOptions`' defaults, ChatGLM2's). Emotion
    scores are None unless both ``pred_emotions`` and ``gold_emotions`` are given. ``meteor_synonyms=False`` skips
    WordNet even when one is installed (English only; Chinese never uses it). The dict is JSON-ready and records how
    each number was computed: ``tokenization`` (the words METEOR, ROUGE and the reply checks score on),
    ``bleu_tokens``/``bleu_tokenization``, ``rouge_counting``/``rouge_tokenization``, ``meteor_synonyms`` and
    ``wordnet_source`` among others.
    """
    scores, method = pair_scores(hyps, refs, language, meteor_synonyms=meteor_synonyms, text_metrics=text_metrics)
    report: dict[str, Any] = {
        "count": len(refs),
        "language": language,
        **{key: mean_x100(values) for key, values in scores.items()},
        "emotion_accuracy": None,
        "emotion_macro_f1": None,
        "emotion_f1": None,
        **method,
    }
    if (pred_emotions is None) != (gold_emotions is None):
        raise InputError("give both predicted and gold emotions, or neither")
    if pred_emotions is not None and gold_emotions is not None:
        if len(gold_emotions) != len(refs):
            raise InputError(f"{len(gold_emotions)} gold emotions for {len(refs)} references")
        report.update(emotion_scores(pred_emotions, gold_emotions, labels))
    return report
