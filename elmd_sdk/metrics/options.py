"""The two choices Chinese BLEU and ROUGE leave open, as one typed config: BLEU's tokens and ROUGE-1's counting.

The defaults are what ChatGLM2's p-tuning evaluation computes (``ptuning/main.py``, ``compute_metrics``), the
toolchain the paper builds on: sentence BLEU over the characters of the text (``list(text)``), and
rouge-chinese's ``Rouge()`` on jieba words, whose default ``exclusive=True`` counts each distinct unigram once.
The other choice of each keeps what elmd-sdk computed before: BLEU on jieba words, and ROUGE-1 counting every
unigram with its multiplicity, clipped (Lin, 2004; what Google's rouge-score computes). English always scores
BLEU on words and ROUGE with Lin's counting. ROUGE-L is the same under both countings (rouge-chinese's ROUGE-L
ignores ``exclusive``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from elmd_sdk.errors import InputError

BleuTokens = Literal["chars", "words"]
"""BLEU's tokens: every character of the text as written (``chars``), or the metric words of
:func:`~elmd_sdk.metrics.tokenize.tokenize` (``words``)."""

RougeCounting = Literal["unique", "clipped"]
"""ROUGE-1's unigram counting: each distinct unigram once (``unique``, rouge-chinese's ``exclusive=True``), or
every unigram with its multiplicity, the overlap clipped (``clipped``, ``exclusive=False``)."""


@dataclass(frozen=True)
class TextMetricOptions:
    """How Chinese BLEU and ROUGE-1 are computed (see the module docstring); English has no choice here."""

    zh_bleu_tokens: BleuTokens = "chars"  # ChatGLM2: sentence_bleu([list(label)], list(pred), method3)
    zh_rouge_counting: RougeCounting = "unique"  # ChatGLM2: rouge_chinese.Rouge(), exclusive=True by default

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first value outside its choices."""
        for name, choices in (("zh_bleu_tokens", BleuTokens), ("zh_rouge_counting", RougeCounting)):
            value = getattr(self, name)
            if value not in get_args(choices):
                raise InputError(f"must be one of {', '.join(get_args(choices))}, got {value!r}", field=name)

    def bleu_tokens(self, language: str) -> BleuTokens:
        """BLEU's tokens for ``language``: the Chinese choice, words for English."""
        return self.zh_bleu_tokens if language == "zh" else "words"

    def rouge_counting(self, language: str) -> RougeCounting:
        """ROUGE-1's counting for ``language``: the Chinese choice, clipped for English."""
        return self.zh_rouge_counting if language == "zh" else "clipped"
