"""The tokenizations the text metrics score on: one word tokenization per language, and characters for BLEU.

English: lower-cased, then words matched by ``[^\\W_]+(?:'[^\\W_]+)*`` (runs of letters or digits, an inner
apostrophe kept: ``don't``); punctuation is dropped. Chinese: jieba (precise mode, HMM on) words, lower-cased,
dropping tokens that hold no letter or digit (punctuation, spaces). METEOR, ROUGE and the reply checks score on
these words, as the paper's toolchain (rouge-chinese) scores Chinese ROUGE on jieba words. Chinese BLEU scores by
default on :func:`characters` instead, as ChatGLM2's p-tuning evaluation does (:mod:`elmd_sdk.metrics.options`).
"""

from __future__ import annotations

import functools
import logging
import re
from typing import TYPE_CHECKING

from elmd_sdk.errors import InputError

if TYPE_CHECKING:
    import jieba

LANGUAGES: tuple[str, ...] = ("en", "zh")
"""Language codes the metrics accept."""

TOKENIZATION: dict[str, str] = {
    "en": "english-words: lowercase, regex [^\\W_]+(?:'[^\\W_]+)*, punctuation dropped",
    "zh": "jieba-words: jieba 0.42 precise mode (HMM), lowercase, tokens without a letter or digit dropped",
}
"""The word tokenization of each language, as written into every evaluation report."""

CHARACTERS = (
    "characters: list(text), every character as written (punctuation, spaces and case kept), "
    "as ChatGLM2's ptuning/main.py scores BLEU"
)
"""The character tokenization of :func:`characters`, as written into a report whose BLEU scores on it."""

_EN_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_HAS_WORD_CHAR = re.compile(r"[^\W_]")


def check_language(language: str) -> str:
    """Return ``language`` if the metrics support it, else raise :class:`InputError` listing the choices."""
    if language not in LANGUAGES:
        raise InputError(f"unsupported language {language!r}; choose one of: {', '.join(LANGUAGES)}", field="language")
    return language


@functools.cache
def _jieba() -> jieba.Tokenizer:
    """A private jieba tokenizer with the default dictionary, built once (about a second)."""
    import jieba

    logging.getLogger("jieba").setLevel(logging.WARNING)  # silence "Building prefix dict ..." on stderr
    return jieba.Tokenizer()


def tokenize(text: str, language: str) -> list[str]:
    """Split ``text`` into the metric tokens of ``language`` (``"en"`` or ``"zh"``), see the module docstring."""
    lowered = text.replace("\u2019", "'").lower()
    if check_language(language) == "en":
        return _EN_WORD.findall(lowered)
    return [tok for tok in _jieba().lcut(lowered) if _HAS_WORD_CHAR.search(tok)]


def characters(text: str) -> list[str]:
    """Every character of ``text`` as written: ChatGLM2's ``list(pred)`` for BLEU (nothing dropped or lowered)."""
    return list(text)
