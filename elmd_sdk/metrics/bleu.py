"""BLEU-n (paper 4.4) with nltk: sentence-level BLEU, NIST geometric smoothing, averaged over the pairs.

Sentence-level and averaged (not ``corpus_bleu``), with ``SmoothingFunction().method3``, is how ChatGLM2's p-tuning
evaluation (``ptuning/main.py``, the toolchain the paper builds on) computes BLEU-4, and gives the paper's
percentage scale; method3 keeps a short response with no 4-gram match from scoring 0. :func:`bleu` scores the
tokens it is given: ChatGLM2 scores Chinese on characters, which :func:`~elmd_sdk.metrics.score.score_generations`
does by default (:mod:`elmd_sdk.metrics.options` keeps jieba words selectable).
"""

from __future__ import annotations

from collections.abc import Sequence

from elmd_sdk.metrics.average import mean_x100

BLEU_METHOD = "nltk sentence_bleu, uniform weights, SmoothingFunction().method3, mean over pairs, x100"
"""How :func:`bleu` is computed, as written into every evaluation report."""


def sentence_bleu_scores(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], max_n: int) -> list[float]:
    """Sentence BLEU-``max_n`` (a fraction) of each tokenized hypothesis against its one tokenized reference
    (0 where either side is empty)."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu  # nltk takes seconds to import

    if len(hyps) != len(refs) or not hyps:
        raise ValueError(f"need as many hypotheses as references, at least one (got {len(hyps)} and {len(refs)})")
    weights = (1.0 / max_n,) * max_n
    smoothing = SmoothingFunction().method3
    return [
        float(sentence_bleu([list(ref)], list(hyp), weights=weights, smoothing_function=smoothing))
        if hyp and ref
        else 0.0
        for hyp, ref in zip(hyps, refs, strict=True)
    ]


def bleu(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], max_n: int) -> float:
    """BLEU-``max_n`` x100 of tokenized hypotheses against one tokenized reference each (empty hypothesis: 0)."""
    return mean_x100(sentence_bleu_scores(hyps, refs, max_n))
