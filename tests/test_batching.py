"""The batch engine: concurrent calls decoded together give the same tokens as calls decoded alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from chain_fakes import tiny_bundle, tiny_chat
from tolerances import SAME_MATH

from elmd_sdk.errors import ElmdError
from elmd_sdk.models.chat_model import ELMDChatModel

PROMPTS = [
    "hello there",
    "The dog passed away this morning. I am so sad and I cannot stop crying about it all day long",
    "I got the job!",
    "x",
]


def _batch_sizes(model: Any) -> tuple[list[int], Callable[[], None]]:
    """Record the batch size of every forward pass of ``model``."""
    sizes: list[int] = []

    def hook(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        tensor = kwargs.get("input_ids", kwargs.get("inputs_embeds"))
        sizes.append(int(tensor.shape[0]))

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    return sizes, handle.remove


def _concurrently(chat: ELMDChatModel, **options: Any) -> list[str]:
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        return list(pool.map(lambda p: str(chat.invoke(p, **options).content), PROMPTS))


@pytest.mark.parametrize("options", [{}, {"do_sample": True, "seed": 3, "temperature": 1.5, "top_p": 0.9}])
def test_concurrent_calls_share_forward_passes_and_equal_solo_calls(options: dict[str, Any]) -> None:
    chat = tiny_chat(max_new_tokens=40)
    solo = [str(chat.invoke(p, **options).content) for p in PROMPTS]
    sizes, remove = _batch_sizes(chat.hf_model)
    with chat.batched(max_batch=8):
        together = _concurrently(chat, **options)
    remove()
    assert together == solo
    decode_steps = [n for n in sizes if n > 1]
    assert decode_steps and max(decode_steps) <= len(PROMPTS)  # prompts run alone, decode steps shared
    assert len(sizes) < len(PROMPTS) * 40  # fewer forward passes than one per token per call


def test_a_prefixed_model_batches_too(tmp_path: Path) -> None:
    from elmd_sdk.chains import ELMDChain

    chain = ELMDChain.from_bundle(tiny_bundle(tmp_path / "b"), max_new_tokens=24)
    chat = chain.chat_model
    assert isinstance(chat, ELMDChatModel)
    solo = [str(chat.invoke(p).content) for p in PROMPTS]
    sizes, remove = _batch_sizes(chat.hf_model)
    with chat.batched(max_batch=8):
        assert _concurrently(chat) == solo
    remove()
    assert max(sizes) > 1


def test_max_batch_bounds_the_batch_and_the_rest_wait() -> None:
    chat = tiny_chat(max_new_tokens=30)
    solo = [str(chat.invoke(p).content) for p in PROMPTS]
    sizes, remove = _batch_sizes(chat.hf_model)
    with chat.batched(max_batch=2):
        assert _concurrently(chat) == solo
    remove()
    assert set(sizes) == {1, 2}  # prompts alone, decode steps two at a time


def test_a_closed_stream_leaves_the_batch() -> None:
    chat = tiny_chat(max_new_tokens=1000)
    with chat.batched() as engine:
        stream = chat.stream("hello there")
        next(stream)
        assert engine.active == 1
        stream.close()
        deadline = time.monotonic() + 10
        while engine.active and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.active == 0


def test_errors_reach_the_caller_and_the_engine_goes_on() -> None:
    chat = tiny_chat()
    with chat.batched() as engine:
        with pytest.raises(ZeroDivisionError):
            engine.run(lambda: 1 / 0)
        assert engine.run(lambda: threading.current_thread().name) == "elmd-batch-engine"
        assert chat.invoke("hello").content == tiny_chat().invoke("hello").content
    with pytest.raises(ElmdError, match="closed"):
        engine.run(lambda: None)
    with pytest.raises(ElmdError, match="at least 1"):
        type(engine)(chat.hf_model, max_batch=0)


def test_left_padding_keeps_each_rows_positions() -> None:
    """A short and a long prompt decoded together: the short one's cache is left-padded, its positions not shifted."""
    chat = tiny_chat(max_new_tokens=40)
    short, long = "x", " ".join(["The dog passed away this morning."] * 8)
    expected = [str(chat.invoke(p).content) for p in (short, long)]
    with chat.batched(), ThreadPoolExecutor(2) as pool:
        got = list(pool.map(lambda p: str(chat.invoke(p).content), (short, long)))
    assert got == expected


def test_the_prompt_cache_runs_only_what_is_new() -> None:
    from elmd_sdk.models.decoding import PromptCache, prefill

    chat = tiny_chat()
    model, tokenizer = chat.hf_model, chat.tokenizer
    ids = [tokenizer(text, return_tensors="pt")["input_ids"] for text in (PROMPTS[1], PROMPTS[1] + " and more words")]
    run: list[int] = []
    handle = model.register_forward_pre_hook(
        lambda _m, _a, kwargs: run.append(int(kwargs["input_ids"].shape[1])), with_kwargs=True
    )
    cache = PromptCache(min_shared=4)
    try:
        first = cache.prefill(model, ids[0])
        second = cache.prefill(model, ids[1])
        again = cache.prefill(model, ids[1])
        short = tokenizer("x y", return_tensors="pt")["input_ids"]
        other = cache.prefill(model, short)
    finally:
        handle.remove()
    new = ids[1].shape[1] - ids[0].shape[1]
    assert run == [ids[0].shape[1], new, 1, short.shape[1]]  # whole, the new part, one token, whole
    for context, prompt in ((first, ids[0]), (second, ids[1]), (again, ids[1])):
        full = prefill(model, torch.ones_like(prompt), input_ids=prompt)
        assert torch.allclose(context.logits, full.logits, atol=SAME_MATH, rtol=SAME_MATH)
        assert context.cache.get_seq_length() == prompt.shape[1] and context.attention_mask.shape == prompt.shape
    assert other.cache.get_seq_length() == short.shape[1]


def test_closed_set_replies_batch_with_their_forced_emotion_lines() -> None:
    from chain_fakes import FixedRetriever

    from elmd_sdk.chains import ELMDChain

    chain = ELMDChain(chat_model=tiny_chat(max_new_tokens=30), retriever=FixedRetriever())
    solo = [chain.invoke(p) for p in PROMPTS]
    sizes, remove = _batch_sizes(chain.chat_model.hf_model)
    with chain.chat_model.batched(), ThreadPoolExecutor(len(PROMPTS)) as pool:
        together = list(pool.map(chain.invoke, PROMPTS))
    remove()
    assert [(r.emotion, r.response) for r in together] == [(r.emotion, r.response) for r in solo]
    for batched, alone in zip(together, solo, strict=True):  # pytest.approx does not look inside a list of dicts
        assert batched.emotion_scores.keys() == alone.emotion_scores.keys()
        assert batched.emotion_scores == pytest.approx(alone.emotion_scores, abs=SAME_MATH)
    assert any(n > 1 for n in sizes)


def test_a_closed_stream_runs_no_forward_pass_after_the_step_in_progress() -> None:
    """Work submitted with run() runs between two decode steps: after closing a stream, one such barrier lets the
    step in progress end, and from the next one on the closed sequence is gone and nothing runs for it."""
    chat = tiny_chat(max_new_tokens=1000)
    sizes, remove = _batch_sizes(chat.hf_model)
    try:
        with chat.batched() as engine:
            stream = chat.stream("hello there")
            next(stream)
            next(stream)
            assert engine.active == 1
            stream.close()
            engine.run(lambda: None)  # the step running at close() has ended
            after_close = len(sizes)
            engine.run(lambda: None)
            engine.run(lambda: None)
            assert len(sizes) == after_close  # no step ran for the closed stream between the barriers
            assert engine.active == 0 and engine.waiting == 0
    finally:
        remove()
    assert len(sizes) < 100  # the 1000 tokens it asked for were never decoded


def test_a_closed_stream_leaves_the_others_decoding_unchanged() -> None:
    chat = tiny_chat(max_new_tokens=30)
    expected = str(chat.invoke(PROMPTS[1]).content)
    with chat.batched(max_batch=2) as engine:
        dropped = chat.stream(PROMPTS[0], max_new_tokens=1000)
        next(dropped)
        next(dropped)
        with ThreadPoolExecutor(1) as pool:
            kept = pool.submit(lambda: str(chat.invoke(PROMPTS[1]).content))
            dropped.close()
            assert kept.result() == expected
        engine.run(lambda: None)
        assert engine.active == 0


def test_closing_the_engine_ends_a_reply_still_decoding_with_an_error() -> None:
    chat = tiny_chat(max_new_tokens=1000)
    outcome: list[BaseException] = []
    with chat.batched() as engine:
        stream = chat.stream("hello there")
        next(stream)
    assert engine.active == 0

    def rest() -> None:
        try:
            list(stream)
        except BaseException as error:  # recorded for the assertion below
            outcome.append(error)

    reader = threading.Thread(target=rest, daemon=True)
    reader.start()
    reader.join(timeout=60)  # a guard against a hang (the bug this test catches), not a timing
    assert not reader.is_alive(), "the reply still waits for tokens from a closed engine"
    assert len(outcome) == 1 and isinstance(outcome[0], ElmdError)
    assert "closed before this reply ended" in str(outcome[0])
