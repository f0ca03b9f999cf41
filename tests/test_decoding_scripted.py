"""Decoding against hand-computed expectations, on a bigram Llama whose next-token distributions are set by hand.

The random tiny LLM cannot show what EOS, temperature, top-p and top-k do: its EOS is never likely, and comparing
``stream`` or ``batch`` with ``invoke`` runs the same code on both sides. Here every reply has a known end, and every
sampling setting a known distribution over four tokens a, b, c, d (drawn many times in one seeded reply).
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pytest
import torch
from llm_fakes import bigram_llama, logits_row, tiny_tokenizer

from elmd_sdk.models.chat_model import ELMDChatModel
from elmd_sdk.models.decoding import Chooser, Sampling, decode_steps, prefill

P = {"a": 0.5, "b": 0.3, "c": 0.15, "d": 0.05}  # the distribution after every listed token, before any warping
DRAWS = 400


@pytest.fixture(scope="module")
def tokenizer() -> Any:
    return tiny_tokenizer()


def _id(tokenizer: Any, text: str) -> int:
    [token] = tokenizer(text, add_special_tokens=False)["input_ids"]
    return int(token)


def _prompt_end(tokenizer: Any) -> int:
    """The last token of every chat prompt (the generation prompt's line break): what the first choice follows."""
    return _prompt_ids(tokenizer)[-1]


def _prompt_ids(tokenizer: Any) -> list[int]:
    """The token ids of the chat prompt of one user message "x"."""
    turns = [{"role": "user", "content": "x"}]
    return list(tokenizer.apply_chat_template(turns, add_generation_prompt=True)["input_ids"])


def _spelling_chat(tokenizer: Any, **settings: Any) -> ELMDChatModel:
    """Greedy or not, the reply is "hi" then EOS; after EOS the model would go on with "hi" again."""
    h, i, eos, vocab = _id(tokenizer, "h"), _id(tokenizer, "i"), tokenizer.eos_token_id, len(tokenizer)
    table = {
        _prompt_end(tokenizer): logits_row(vocab, {h: 0.0}),
        h: logits_row(vocab, {i: 0.0}),
        i: logits_row(vocab, {eos: 0.0}),
        eos: logits_row(vocab, {h: 0.0}),
    }
    model = bigram_llama(tokenizer, table)
    return ELMDChatModel(hf_model=model, tokenizer=tokenizer, **{"do_sample": False, "max_new_tokens": 10, **settings})


def _sampling_chat(tokenizer: Any, **settings: Any) -> ELMDChatModel:
    """After the prompt and after each of a, b, c, d the next token is drawn from :data:`P` (EOS never)."""
    vocab = len(tokenizer)
    row = logits_row(vocab, {_id(tokenizer, t): math.log(p) for t, p in P.items()})
    listed = [_prompt_end(tokenizer), *(_id(tokenizer, t) for t in P)]
    model = bigram_llama(tokenizer, dict.fromkeys(listed, row))
    return ELMDChatModel(hf_model=model, tokenizer=tokenizer, **{"seed": 0, "max_new_tokens": DRAWS, **settings})


def _frequencies(chat: ELMDChatModel, **options: Any) -> dict[str, float]:
    reply = chat.invoke("x", **options)
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == DRAWS
    counts = Counter(str(reply.content))
    assert set(counts) <= set(P) and sum(counts.values()) == DRAWS
    return {t: counts[t] / DRAWS for t in P}


def _assert_drawn_from(frequencies: dict[str, float], expected: dict[str, float]) -> None:
    """Tokens of probability 0 never drawn; the others within 4 standard errors of their probability."""
    for token, p in expected.items():
        if p == 0:
            assert frequencies[token] == 0, (token, frequencies)
        else:
            assert abs(frequencies[token] - p) <= 4 * math.sqrt(p * (1 - p) / DRAWS), (token, frequencies, expected)


# --- end of sequence -------------------------------------------------------------------------------------------


def test_decoding_yields_the_eos_token_and_stops_there(tokenizer: Any) -> None:
    chat = _spelling_chat(tokenizer)
    model = chat.hf_model
    ids = torch.tensor([_prompt_ids(tokenizer)])  # (1, T)
    context = prefill(model, torch.ones_like(ids), input_ids=ids)
    sampling = Sampling(do_sample=False, temperature=1.0, top_p=1.0, top_k=0, seed=None)
    chooser = Chooser(sampling, ids.device, max_new_tokens=10, eos_ids=[tokenizer.eos_token_id])
    h, i = _id(tokenizer, "h"), _id(tokenizer, "i")
    assert list(decode_steps(model, context, chooser)) == [h, i, tokenizer.eos_token_id]


def test_a_reply_ends_at_eos_in_every_path(tokenizer: Any) -> None:
    chat = _spelling_chat(tokenizer)
    reply = chat.invoke("x")
    assert reply.content == "hi"
    assert reply.usage_metadata is not None and reply.usage_metadata["output_tokens"] == 3  # h, i and the EOS
    assert reply.response_metadata["finish_reason"] == "stop"
    chunks = list(chat.stream("x"))
    assert "".join(str(c.content) for c in chunks) == "hi"
    assert sum(c.usage_metadata["output_tokens"] for c in chunks if c.usage_metadata) == 3
    assert chunks[-1].response_metadata["finish_reason"] == "stop"
    assert [m.content for m in chat.batch(["x", "y"])] == ["hi", "hi"]
    with chat.batched():
        batched = chat.invoke("x")
    assert batched.content == "hi" and batched.usage_metadata is not None
    assert batched.usage_metadata["output_tokens"] == 3


def test_finish_reason_is_stop_when_eos_is_the_last_allowed_token(tokenizer: Any) -> None:
    chat = _spelling_chat(tokenizer)
    ended = chat.invoke("x", max_new_tokens=3)
    assert (ended.content, ended.response_metadata["finish_reason"]) == ("hi", "stop")
    cut = chat.invoke("x", max_new_tokens=2)
    assert (cut.content, cut.response_metadata["finish_reason"]) == ("hi", "length")
    assert cut.usage_metadata is not None and cut.usage_metadata["output_tokens"] == 2


def test_the_tokenizers_eos_and_the_generation_configs_eos_both_end_a_reply(tokenizer: Any) -> None:
    chat = _spelling_chat(tokenizer)
    chat.hf_model.generation_config.eos_token_id = tokenizer.pad_token_id  # a model whose config names another EOS
    reply = chat.invoke("x")  # the script ends with the tokenizer's EOS
    assert reply.content == "hi" and reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] == 3
    i, pad = _id(tokenizer, "i"), tokenizer.pad_token_id
    with torch.no_grad():
        chat.hf_model.lm_head.weight[:, 2] = logits_row(len(tokenizer), {pad: 0.0})  # column 2 is i's row: i -> pad
    assert chat.hf_model(torch.tensor([[i]])).logits[0, -1].argmax() == pad
    reply = chat.invoke("x")
    assert reply.content == "hi" and reply.usage_metadata is not None
    assert reply.usage_metadata["output_tokens"] == 3


# --- sampling: temperature, top-p, top-k ----------------------------------------------------------------------


def test_temperature_flattens_the_distribution(tokenizer: Any) -> None:
    chat = _sampling_chat(tokenizer, do_sample=True, top_p=1.0)  # (temperature 1 gives P: see the top-p test)
    # T = 2: p ** (1/2) renormalised: sqrt(.5, .3, .15, .05) = (.7071, .5477, .3873, .2236), sum 1.8657
    _assert_drawn_from(_frequencies(chat, temperature=2.0), {"a": 0.379, "b": 0.2936, "c": 0.2076, "d": 0.1198})
    # T = 0.5: p ** 2 renormalised: (.25, .09, .0225, .0025) / .365
    _assert_drawn_from(_frequencies(chat, temperature=0.5), {"a": 0.6849, "b": 0.2466, "c": 0.0616, "d": 0.0068})
    # The model's own setting, not only a per-call one.
    hot = _sampling_chat(tokenizer, do_sample=True, top_p=1.0, temperature=2.0)
    _assert_drawn_from(_frequencies(hot), {"a": 0.379, "b": 0.2936, "c": 0.2076, "d": 0.1198})


def test_temperature_zero_is_greedy(tokenizer: Any) -> None:
    chat = _sampling_chat(tokenizer, do_sample=True, max_new_tokens=20)
    assert chat.invoke("x", temperature=0.0).content == "a" * 20


def test_top_p_keeps_the_smallest_set_holding_p_of_the_mass(tokenizer: Any) -> None:
    chat = _sampling_chat(tokenizer, do_sample=True, temperature=1.0)
    # top-p 0.7: from the least likely up, d (.05) and c (.20 so far) lie within the 0.3 dropped; b (.50) does not.
    _assert_drawn_from(_frequencies(chat, top_p=0.7), {"a": 0.625, "b": 0.375, "c": 0.0, "d": 0.0})
    _assert_drawn_from(_frequencies(chat, top_p=1.0), P)
    # top-p 0.9: only d (.05) lies within the 0.1 dropped: (.5, .3, .15) / .95
    _assert_drawn_from(_frequencies(chat, top_p=0.9), {"a": 0.5263, "b": 0.3158, "c": 0.1579, "d": 0.0})


def test_top_p_cuts_after_temperature(tokenizer: Any) -> None:
    chat = _sampling_chat(tokenizer, do_sample=True)
    # T = 2 first: (.379, .2936, .2076, .1198); cumulated from the least likely: .1198, .3274 > 0.3, so only d goes.
    # (top-p before temperature would keep a and b only.)
    _assert_drawn_from(
        _frequencies(chat, temperature=2.0, top_p=0.7), {"a": 0.4306, "b": 0.3335, "c": 0.2359, "d": 0.0}
    )


def test_the_papers_defaults_sample_from_the_nucleus(tokenizer: Any) -> None:
    chat = _sampling_chat(tokenizer)  # top-p 0.7, temperature 0.95
    # p ** (1/.95) renormalised: (.5115, .2989, .1444, .0452); top-p drops d and c (.0452 + .1444 <= 0.3)
    _assert_drawn_from(_frequencies(chat), {"a": 0.6313, "b": 0.3687, "c": 0.0, "d": 0.0})


def test_top_k_keeps_the_k_most_likely(tokenizer: Any) -> None:
    chat = _sampling_chat(tokenizer, do_sample=True, temperature=1.0, top_p=1.0)
    _assert_drawn_from(_frequencies(chat, top_k=3), {"a": 0.5263, "b": 0.3158, "c": 0.1579, "d": 0.0})
    _assert_drawn_from(_frequencies(chat, top_k=1), {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0})
