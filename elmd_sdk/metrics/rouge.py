"""ROUGE-1 and ROUGE-L F (paper 4.4) with rouge-chinese, the paper's implementation, for both languages.

The texts are tokenized first (:mod:`elmd_sdk.metrics.tokenize`) and handed over space-joined, so English and
Chinese go through the same code. ``counting`` picks rouge-chinese's ``exclusive`` (see
:mod:`elmd_sdk.metrics.options`): ``"unique"`` (``exclusive=True``, its default, which ChatGLM2's evaluation uses)
counts each distinct unigram once; ``"clipped"`` (``exclusive=False``) counts repeated unigrams with their
multiplicity, clipped, as Lin (2004) defines ROUGE-N. ROUGE-L is the same under both.
"""

from __future__ import annotations

from collections.abc import Sequence

from elmd_sdk.metrics.options import RougeCounting

ROUGE_METHODS: dict[RougeCounting, str] = {
    "unique": "rouge-chinese Rouge(exclusive=True): ROUGE-1 counts each distinct unigram once; "
    "F on space-joined tokens, mean over pairs, x100",
    "clipped": "rouge-chinese Rouge(exclusive=False): ROUGE-1 counts unigrams with multiplicity, clipped (Lin 2004); "
    "F on space-joined tokens, mean over pairs, x100",
}
"""How :func:`rouge` is computed under each counting, as written into every evaluation report."""


def rouge(
    hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], *, counting: RougeCounting = "clipped"
) -> dict[str, float]:
    """``{"rouge_1", "rouge_l"}`` F-scores x100 of tokenized pairs, averaged (an empty side scores 0).

    ``counting`` defaults to Lin's, what this function always computed; evaluation passes the language's choice
    (:class:`~elmd_sdk.metrics.options.TextMetricOptions`).
    """
    if len(hyps) != len(refs) or not hyps:
        raise ValueError(f"need as many hypotheses as references, at least one (got {len(hyps)} and {len(refs)})")
    if counting not in ROUGE_METHODS:
        raise ValueError(f"counting must be one of {', '.join(ROUGE_METHODS)}, got {counting!r}")
    from rouge_chinese import Rouge  # the [eval] extra: imported here, so metrics without it load anywhere

    scorer = Rouge(metrics=["rouge-1", "rouge-l"], exclusive=counting == "unique")
    r1 = rl = 0.0
    for hyp, ref in zip(hyps, refs, strict=True):
        if hyp and ref:  # rouge-chinese raises on an empty text
            scores = scorer.get_scores(" ".join(hyp), " ".join(ref))[0]
            r1 += scores["rouge-1"]["f"]
            rl += scores["rouge-l"]["f"]
    return {"rouge_1": 100.0 * r1 / len(hyps), "rouge_l": 100.0 * rl / len(hyps)}
