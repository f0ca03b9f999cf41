"""What goes wrong when a chatbot lives with its own replies, measured per bot turn of a conversation.

* self-repetition: the reply shares a run of :data:`REPEAT_WORDS` metric tokens with an earlier bot reply of the same
  conversation (the bot says again what it said before);
* echo: the reply shares such a run with a user turn of the conversation so far (the bot parrots the user);
* mid-sentence: the reply does not end at a sentence end (``.``, ``!``, ``?``, an ellipsis or their Chinese forms,
  optionally followed by closing quotes or brackets), so it was cut;
* meta-aside: the reply holds a parenthesised remark, ``(...)``, which a chat reply does not need;
* contradiction: the reply's emotion goes against the user's: a happy user answered with anger, disgust, sadness or
  fear, or a sad, fearful or angry user answered with happiness.

Runs are counted on :func:`~elmd_sdk.metrics.tokenize.tokenize`'s metric tokens.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from elmd_sdk.metrics.reply import ngrams, rate_x100
from elmd_sdk.metrics.tokenize import tokenize

REPEAT_WORDS = 6
"""Length of the shared word run that makes a reply a repetition (of the bot's own words) or an echo (of the user's)."""

NEGATIVE = frozenset({"anger", "disgust", "sad", "fear"})
CONTRADICTIONS: dict[str, frozenset[str]] = {
    "happy": NEGATIVE,
    "sad": frozenset({"happy"}),
    "fear": frozenset({"happy"}),
    "anger": frozenset({"happy"}),
}
"""The user's emotion -> the reply emotions that go against it."""

_SENTENCE_END = re.compile(r"(?:[.!?…。！？]|\.\.\.)[\"'”’)\]」』]*\s*$")
_ASIDE = re.compile(r"[(（][^)）]*[)）]|[\[【][^\]】]*[\]】]|\*[^*\n]+\*")  # (…) [...] 【…】 *…*


def shares_run(reply: Sequence[str], others: Iterable[Sequence[str]], n: int = REPEAT_WORDS) -> bool:
    """Whether ``reply`` (tokens) holds a run of ``n`` tokens that also occurs in one of ``others``."""
    grams = set(ngrams(reply, n))
    return bool(grams) and any(grams.intersection(ngrams(other, n)) for other in others)


def ends_mid_sentence(reply: str) -> bool:
    """Whether a non-empty reply stops without a sentence end."""
    return bool(reply.strip()) and _SENTENCE_END.search(reply) is None


def has_aside(reply: str) -> bool:
    """Whether the reply holds a remark in parentheses, brackets or asterisks (a stage direction such as "(smiles)",
    "[smiling]" or "*smiling*")."""
    return _ASIDE.search(reply) is not None


def contradicts(user_emotion: str | None, reply_emotion: str | None) -> bool:
    """Whether the reply's emotion goes against the user's (False when either is unknown)."""
    return reply_emotion in CONTRADICTIONS.get(user_emotion or "", frozenset())


def reply_rates(
    replies: Sequence[str],
    utterances: Sequence[str],
    reply_emotions: Sequence[str | None],
    user_emotions: Sequence[str | None],
    language: str,
) -> dict[str, float | None]:
    """What a single turn shows of these failures, x100 over the replies: echo (of the user's utterance),
    mid-sentence endings, meta-asides, and contradictions (over the replies whose emotion and user's gold emotion
    are both known; None when there are none)."""
    echoes = sum(
        shares_run(tokenize(reply, language), [tokenize(utterance, language)])
        for reply, utterance in zip(replies, utterances, strict=True)
    )
    known = [(u, r) for u, r in zip(user_emotions, reply_emotions, strict=True) if u is not None and r is not None]
    return {
        "echo_rate": rate_x100(echoes, len(replies)),
        "mid_sentence_rate": rate_x100(sum(ends_mid_sentence(reply) for reply in replies), len(replies)),
        "aside_rate": rate_x100(sum(has_aside(reply) for reply in replies), len(replies)),
        "contradiction_rate": rate_x100(sum(contradicts(u, r) for u, r in known), len(known)),
    }
