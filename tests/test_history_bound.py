"""The work before decoding is bounded by what the prompt can hold (issue 26): a history of 10,000 turns, or of a few
hundred very long ones, is cut from the newest turn backwards without tokenizing all of it. Measured by counting
the characters handed to the tokenizer, not by timing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from elmd_sdk.chains import ELMDChain
from elmd_sdk.models.chat_model import ELMDChatModel


@pytest.fixture
def tokenized(chat: ELMDChatModel, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The length of every text the chat model's tokenizer is called on."""
    lengths: list[int] = []
    tokenizer_class = type(chat.tokenizer)
    call = tokenizer_class.__call__

    def counting(self: Any, text: Any, *args: Any, **kwargs: Any) -> Any:
        lengths.append(len(text) if isinstance(text, str) else sum(len(t) for t in text))
        return call(self, text, *args, **kwargs)

    chat.max_token_chars()  # computed once per tokenizer, before counting
    monkeypatch.setattr(tokenizer_class, "__call__", counting)
    yield lengths


def _kept(chain: ELMDChain, history: list[str]) -> tuple[int, int]:
    """(history turns in the prompt, characters of the prompt)."""
    messages = chain.build_messages({"utterance": "Hello?", "history": history})
    text = messages[-1].text
    kept = [i for i in range(len(history)) if f"turn {i}:" in text]
    assert kept == list(range(len(history) - len(kept), len(history)))  # the newest turns
    return len(kept), sum(len(m.text) for m in messages)


def test_ten_thousand_turns_tokenize_about_what_the_context_holds(chat: ELMDChatModel, tokenized: list[int]) -> None:
    chain = ELMDChain(chat_model=chat, use_retrieval=False)  # the tiny model's context: 2048 positions
    history = [f"turn {i}: fine, thanks" for i in range(10_000)]
    kept, prompt_chars = _kept(chain, history)
    assert 0 < kept < 1_000  # the newest turns that fit, out of 10,000
    history_chars = sum(len(turn) for turn in history)
    assert sum(tokenized) <= 5 * prompt_chars < history_chars / 10  # before: the whole history, about 15 times
    assert len(tokenized) <= kept + 20  # each kept turn once, then a few whole prompts

    tokenized.clear()  # the same answer as fitting the kept turns plus one, which does not fit
    unlimited = ELMDChain(chat_model=chat, use_retrieval=False, context_window=10**6)
    budget = 2048 - chat.max_new_tokens
    assert (
        unlimited.count_tokens(unlimited.build_messages({"utterance": "Hello?", "history": history[-kept:]})) <= budget
    )
    one_more = unlimited.build_messages({"utterance": "Hello?", "history": history[-kept - 1 :]})
    assert unlimited.count_tokens(one_more) > budget


def test_long_turns_are_cut_before_they_are_tokenized(chat: ELMDChatModel, tokenized: list[int]) -> None:
    chain = ELMDChain(chat_model=chat, use_retrieval=False)
    line = 15_000
    history = [f"turn {i}: " + "word " * (line // 5) for i in range(512)]  # about 7.7 million characters
    kept, prompt_chars = _kept(chain, history)
    assert kept < 5
    # The kept turns, and one more (its line, then a prompt holding it, which does not fit): never the history.
    assert sum(tokenized) <= 3 * (prompt_chars + line) < sum(len(turn) for turn in history) / 100
    assert max(tokenized) <= prompt_chars + line + 200


def test_a_turn_longer_than_the_context_can_hold_is_never_tokenized(chat: ELMDChatModel, tokenized: list[int]) -> None:
    chain = ELMDChain(chat_model=chat, use_retrieval=False)
    huge = "x" * (2048 * chat.max_token_chars() + 1)  # more characters than 2048 tokens of any text can have
    kept, prompt_chars = _kept(chain, ["turn 0: " + huge, "turn 1: short"])
    assert kept == 1
    assert max(tokenized) < len(huge) / 100 and sum(tokenized) <= 5 * prompt_chars


@pytest.mark.parametrize("answer", [0, 1, 5, 17])
def test_the_search_finds_the_largest_count_that_fits_from_any_guess(answer: int) -> None:
    from elmd_sdk.chains.context import largest_fitting

    for most in range(answer, 40):
        for guess in range(most + 1):
            calls: list[int] = []

            def fits(n: int, calls: list[int] = calls) -> bool:
                calls.append(n)
                return n <= answer

            assert largest_fitting(fits, guess, most) == answer
            assert len(calls) <= 2 * (abs(guess - answer) + 1).bit_length() + 2  # grows with the guess's error only
