"""ROUGE-1 and ROUGE-L F (paper 4.4) with rouge-chinese, the paper's implementation, for both languages.

The texts are tokenized first (:mod:`elmd_sdk.metrics.tokenize`) and handed over space-joined, so English and
Chinese go through the same code. ``exclusive=False`` counts repeated unigrams with their multiplicity
(clipped), as Lin (2004) defines ROUGE-N, instead of rouge-chinese's default of unique unigrams.
"""

from __future__ import annotations

from collections.abc import Sequence

from rouge_chinese import Rouge

ROUGE_METHOD = "rouge-chinese Rouge(exclusive=False) F on space-joined tokens, mean over pairs, x100"
"""How :func:`rouge` is computed, as written into every evaluation report."""


def rouge(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]]) -> dict[str, float]:
    """``{"rouge_1", "rouge_l"}`` F-scores x100 of tokenized pairs, averaged (an empty side scores 0)."""
    if len(hyps) != len(refs) or not hyps:
        raise ValueError(f"need as many hypotheses as references, at least one (got {len(hyps)} and {len(refs)})")
    scorer = Rouge(metrics=["rouge-1", "rouge-l"], exclusive=False)
    r1 = rl = 0.0
    for hyp, ref in zip(hyps, refs, strict=True):
        if hyp and ref:  # rouge-chinese raises on an empty text
            scores = scorer.get_scores(" ".join(hyp), " ".join(ref))[0]
            r1 += scores["rouge-1"]["f"]
            rl += scores["rouge-l"]["f"]
    return {"rouge_1": 100.0 * r1 / len(hyps), "rouge_l": 100.0 * rl / len(hyps)}
