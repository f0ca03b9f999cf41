"""ROUGE-1 and ROUGE-L F (paper 4.4) with rouge-chinese, the paper's implementation, for both languages.

The texts are tokenized first (:mod:`elmd_sdk.metrics.tokenize`) and handed over space-joined, so English and
Chinese go through the same code. ``counting`` picks rouge-chinese's ``exclusive`` (see
:mod:`elmd_sdk.metrics.options`): ``"unique"`` (``exclusive=True``, its default, which ChatGLM2's evaluation uses)
counts each distinct unigram once; ``"clipped"`` (``exclusive=False``) counts repeated unigrams with their
multiplicity, clipped, as Lin (2004) defines ROUGE-N. ROUGE-L is the same under both.
"""

from __future__ import annotations

from collections.abc import Sequence

from elmd_sdk.metrics.average import mean_x100
from elmd_sdk.metrics.options import RougeCounting

ROUGE_METHODS: dict[RougeCounting, str] = {
    "unique": "rouge-chinese Rouge(exclusive=True): ROUGE-1 counts each distinct unigram once; "
    "F on space-joined tokens, mean over pairs, x100",
    "clipped": "rouge-chinese Rouge(exclusive=False): ROUGE-1 counts unigrams with multiplicity, clipped (Lin 2004); "
    "F on space-joined tokens, mean over pairs, x100",
}
"""How :func:`rouge` is computed under each counting, as written into every evaluation report."""


def rouge_scores(
    hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], *, counting: RougeCounting = "clipped"
) -> dict[str, list[float]]:
    """``{"rouge_1", "rouge_l"}``: the F-score (a fraction) of each tokenized pair (0 where either side is empty)."""
    if len(hyps) != len(refs) or not hyps:
        raise ValueError(f"need as many hypotheses as references, at least one (got {len(hyps)} and {len(refs)})")
    if counting not in ROUGE_METHODS:
        raise ValueError(f"counting must be one of {', '.join(ROUGE_METHODS)}, got {counting!r}")
    from rouge_chinese import Rouge  # the [eval] extra: imported here, so metrics without it load anywhere

    scorer = Rouge(metrics=["rouge-1", "rouge-l"], exclusive=counting == "unique")
    out: dict[str, list[float]] = {"rouge_1": [], "rouge_l": []}
    for hyp, ref in zip(hyps, refs, strict=True):
        scores = scorer.get_scores(" ".join(hyp), " ".join(ref))[0] if hyp and ref else None  # it raises on empty
        out["rouge_1"].append(scores["rouge-1"]["f"] if scores else 0.0)
        out["rouge_l"].append(scores["rouge-l"]["f"] if scores else 0.0)
    return out


def rouge(
    hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], *, counting: RougeCounting = "clipped"
) -> dict[str, float]:
    """``{"rouge_1", "rouge_l"}`` F-scores x100 of tokenized pairs, averaged (an empty side scores 0).

    ``counting`` defaults to Lin's, what this function always computed; evaluation passes the language's choice
    (:class:`~elmd_sdk.metrics.options.TextMetricOptions`).
    """
    return {key: mean_x100(values) for key, values in rouge_scores(hyps, refs, counting=counting).items()}
