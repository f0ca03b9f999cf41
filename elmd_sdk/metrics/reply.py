"""What a chatbot builder checks in replies beyond overlap with a reference: diversity, copying, template leaks.

* distinct-n (Li et al., 2016): distinct n-grams over all n-grams of all replies (corpus level), x100.
* copy rate: share of replies (x100) whose longest common word subsequence with the demonstration's r' covers at
  least 60% of r''s words: the reply reproduces the retrieved example instead of answering.
* template-leak rate: share of replies (x100) that carry text of the prompt or answer template rather than a reply:
  an answer key ("Emotion:", "Response:"), a prompt part ("Current utterance", "Dialogue history", "Background:",
  the reference marker), a note ("Note:", "(No copying)"), a role or speaker line ("User:", "Joey:" starting a
  line), the video placeholder or a special token.

All counts are on the metric tokens of :func:`~elmd_sdk.metrics.tokenize.tokenize`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from elmd_sdk.errors import InputError

COPY_COVERAGE = 0.6
"""A reply is a copy when its word LCS with r' covers at least this share of r''s words."""

_TEMPLATE = re.compile(
    r"\b(?:emotion|response|reply|note)\s*:|current utterance|dialogue history|background\s*:|"
    r"not to be copied|no copying|reference from a similar|\b(?:user|assistant|system)\s*:|"
    r"(?:^|\n)\s*[A-Z][\w.' -]{0,24}:|<video>|<\||</s>|\[/?INST\]|"
    r"情感[:：]|回复[:：]|当前话语|历史对话|背景[:：]|参考|请勿照抄|(?:用户|助手)[:：]",
    re.IGNORECASE,
)


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """The n-grams of one reply's tokens, in order."""
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_ratio(distinct: int, total: int) -> float:
    """distinct-n x100 from its counts: distinct n-grams over all n-grams (0 when there is no n-gram)."""
    return 100.0 * distinct / total if total else 0.0


def distinct_n(tokenized: Sequence[Sequence[str]], n: int) -> float:
    """Distinct n-grams / all n-grams over every reply, x100 (0 when the replies hold no n-gram)."""
    grams = [gram for tokens in tokenized for gram in ngrams(tokens, n)]
    return distinct_ratio(len(set(grams)), len(grams))


def rate_x100(hits: int, count: int) -> float | None:
    """The share x100 of ``hits`` among ``count`` items (None when there is none): copy and template-leak rates."""
    return 100.0 * hits / count if count else None


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (dynamic programming, one row)."""
    row = [0] * (len(b) + 1)
    for token in a:
        diagonal = 0
        for j, other in enumerate(b, start=1):
            diagonal, row[j] = row[j], diagonal + 1 if token == other else max(row[j], row[j - 1])
    return row[-1]


def is_copy(reply: Sequence[str], demonstration: Sequence[str], coverage: float = COPY_COVERAGE) -> bool:
    """Whether ``reply`` reproduces ``demonstration`` (token lists): LCS >= ``coverage`` of the demonstration."""
    return bool(demonstration) and lcs_length(reply, demonstration) >= coverage * len(demonstration)


def copy_flags(replies: Sequence[Sequence[str]], demonstrations: Sequence[Sequence[str] | None]) -> list[bool | None]:
    """Whether each reply copies its demonstration (None: the reply had no demonstration)."""
    if len(replies) != len(demonstrations):
        raise InputError(f"{len(replies)} replies but {len(demonstrations)} demonstrations")
    return [is_copy(reply, demo) if demo else None for reply, demo in zip(replies, demonstrations, strict=True)]


def copy_rate(replies: Sequence[Sequence[str]], demonstrations: Sequence[Sequence[str] | None]) -> float | None:
    """Share (x100) of replies that copy their demonstration, over the replies that had one (None: none had)."""
    flags = [flag for flag in copy_flags(replies, demonstrations) if flag is not None]
    return rate_x100(sum(flags), len(flags))


def leaks_template(reply: str) -> bool:
    """Whether the reply carries template text (see the module docstring), English or Chinese."""
    return _TEMPLATE.search(reply) is not None


def template_leak_rate(replies: Sequence[str]) -> float:
    """Share (x100) of replies that carry template text."""
    rate = rate_x100(sum(leaks_template(reply) for reply in replies), len(replies))
    if rate is None:
        raise InputError("no replies to check")
    return rate
