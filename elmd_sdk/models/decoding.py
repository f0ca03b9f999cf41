"""Token-by-token decoding of a causal LM with a KV cache, driven by whoever iterates (no background thread).

Why not ``generate`` plus a streamer thread: torch's OpenMP runtime keeps one worker pool per calling thread, so a
generation thread beside a main thread that already ran torch work oversubscribes the cores (streaming fell to 0.59x
the tokens/s of raw ``generate`` on a 2-core CPU in ``benchmarks/llm_generation.py``). Pulling one token per
``next()`` keeps all work in the consumer's thread, lets ``invoke`` and ``stream`` share one code path, and makes
stopping a stream as simple as no longer iterating.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper


@dataclass(frozen=True)
class Sampling:
    """How the next token is picked: greedy, or nucleus sampling after temperature and an optional top-k cut."""

    do_sample: bool
    temperature: float
    top_p: float
    top_k: int
    seed: int | None  # a private generator when set, so the global RNG is left alone


def decode_steps(
    model: Any,
    attention_mask: torch.Tensor,
    *,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    sampling: Sampling,
    max_new_tokens: int,
    eos_ids: list[int],
    lock: threading.Lock | None = None,
) -> Generator[int, None, None]:
    """Yield new token ids one at a time (an EOS id is yielded, then decoding ends); batch size 1.

    ``attention_mask`` is (1, T); exactly one of ``input_ids`` (1, T) or ``inputs_embeds`` (1, T, hidden) is the
    prompt. With greedy settings the ids equal ``model.generate(..., do_sample=False)``. Each forward pass runs
    under ``lock`` (models with an attached prefix keep per-call state), so interleaved streams stay correct.
    """
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    pick = _picker(sampling, attention_mask.device)
    params = inspect.signature(model.forward).parameters
    keep_last = {"logits_to_keep": 1} if "logits_to_keep" in params else {}
    cache_arg = "cache" if "cache" in params else "past_key_values"  # transformers 5 name, or the older one
    inputs = {"input_ids": input_ids} if input_ids is not None else {"inputs_embeds": inputs_embeds}
    mask, cache = attention_mask, None
    for _ in range(max_new_tokens):
        with lock or contextlib.nullcontext(), torch.no_grad():
            output = model(**inputs, attention_mask=mask, use_cache=True, **{cache_arg: cache}, **keep_last)
        cache = getattr(output, cache_arg)
        token = pick(output.logits[:, -1, :].float())  # (1,)
        yield int(token)
        if int(token) in eos_ids:
            return
        inputs = {"input_ids": token.view(1, 1)}
        mask = torch.cat([mask, mask.new_ones(1, 1)], dim=1)  # (1, T + step)


def _picker(sampling: Sampling, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """Function from last-position logits (1, vocab) to the next token id (1,)."""
    if not sampling.do_sample:
        return lambda logits: logits.argmax(dim=-1)
    warpers = LogitsProcessorList([TemperatureLogitsWarper(sampling.temperature)])
    if sampling.top_k > 0:
        warpers.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        warpers.append(TopPLogitsWarper(sampling.top_p))
    generator = None
    if sampling.seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(sampling.seed)

    no_ids = torch.empty(1, 0, dtype=torch.long, device=device)  # the warpers used here ignore past ids

    def pick(logits: torch.Tensor) -> torch.Tensor:
        scores = warpers(no_ids, logits)  # type: ignore[arg-type]  # transformers annotates LongTensor
        probs = torch.softmax(scores, dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator).view(1)

    return pick
