"""What decoding needs to know of a tokenizer, computed once per tokenizer: encoding and decoding without special
tokens, the end-of-reply ids, the tokens holding a line break, opening a parenthesis or ending a sentence, the
longest token's spelling, whether the tokenizer may drop a trailing space."""

from __future__ import annotations

import re
from functools import cached_property
from typing import Any

from elmd_sdk.errors import ElmdError

WESTERN_END = "[.!?…]"
"""A character that ends a Western sentence (when a space or the end of the text follows, so "3.5" holds none)."""
CHINESE_END = "[。！？]"
"""A character that ends a Chinese sentence."""
CLOSING = "[\"'”’)\\]」』]*"
"""Closing quotes or brackets after a sentence end, which belong to it."""

_SENTENCE_END_TOKEN = re.compile(f"(?:{WESTERN_END}|{CHINESE_END})+{CLOSING}")
"""A token that alone ends a sentence: sentence-end punctuation, then closing quotes or brackets (".", "?!", "!\"")."""


class Vocabulary:
    """A causal LM's tokenizer as :class:`~elmd_sdk.models.chat_model.ELMDChatModel` uses it."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.eos_ids = _eos_ids(model, tokenizer)

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True))

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @cached_property
    def line_break_ids(self) -> list[int]:
        """Ids of the tokens whose text holds a line break."""
        return [i for i in range(len(self.tokenizer)) if "\n" in self.decode([i])]

    @cached_property
    def parenthesis_ids(self) -> list[int]:
        """Ids of the tokens whose text opens a parenthesis (ASCII or full-width)."""
        return [i for i in range(len(self.tokenizer)) if any(p in self.decode([i]) for p in "(（")]

    @cached_property
    def sentence_end_ids(self) -> list[int]:
        """Ids of the tokens whose text (spaces aside) is a sentence end and nothing else."""
        return [i for i in range(len(self.tokenizer)) if _SENTENCE_END_TOKEN.fullmatch(self.decode([i]).strip())]

    @cached_property
    def max_token_chars(self) -> int:
        """The most characters one token stands for: the longest vocabulary entry as the tokenizer spells it
        (byte-level BPE spells each byte as one character, SentencePiece a space as one, so the spelling is never
        shorter than the text), hence a text of c characters takes at least c / this many tokens (for tokenizers
        whose normalizer does not join characters, as the causal LMs' do not)."""
        return max((len(token) for token in self.tokenizer.get_vocab()), default=1)

    @property
    def holds_whitespace(self) -> bool:
        """Tokenizers that clean up spaces before punctuation may still drop a trailing space: hold it back."""
        return bool(getattr(self.tokenizer, "clean_up_tokenization_spaces", False))


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-reply ids: the model's generation-config EOS plus the tokenizer's (often the end-of-turn token)."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = list(configured) if isinstance(configured, list | tuple) else [configured]
    ids.append(tokenizer.eos_token_id)
    unique = list(dict.fromkeys(i for i in ids if i is not None))
    if not unique:
        raise ElmdError("neither the model's generation config nor the tokenizer defines an end-of-sequence token")
    return unique
