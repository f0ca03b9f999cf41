"""Token-by-token decoding of a causal LM with a KV cache, driven by whoever iterates (no background thread).

Why not ``generate`` plus a streamer thread: torch's OpenMP runtime keeps one worker pool per calling thread, so a
generation thread beside a main thread that already ran torch work oversubscribes the cores (streaming fell to 0.59x
the tokens/s of raw ``generate`` on a 2-core CPU in ``benchmarks/llm_generation.py``). Pulling one token per
``next()`` keeps all work in the consumer's thread, lets ``invoke`` and ``stream`` share one code path, and makes
stopping a stream as simple as no longer iterating.

The prompt is run once (:func:`prefill`) into a :class:`Context` (KV cache, mask, next-token logits). From a context
one can score whole continuations in one batched pass (:func:`score_continuations`, the closed-set emotion of the
chat model, REP/EERG validation and evaluation), force tokens (:func:`extend`) and decode (:func:`decode_steps`).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import threading
from collections.abc import Callable, Generator, Sequence
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

    def generator(self, device: torch.device) -> torch.Generator | None:
        """The private generator of a seeded call (None: draw from the global RNG)."""
        if self.seed is None:
            return None
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed)
        return generator


@dataclass(frozen=True)
class _CallStyle:
    """How this model's forward takes the cache and the logits cut (read once from its signature, not per token)."""

    cache_arg: str  # "cache" (transformers 5) or the older "past_key_values"
    logits_to_keep: bool  # whether forward can project only the last positions to the vocabulary

    @classmethod
    def of(cls, model: Any) -> _CallStyle:
        params = inspect.signature(model.forward).parameters
        return cls("cache" if "cache" in params else "past_key_values", "logits_to_keep" in params)


@dataclass(frozen=True)
class Context:
    """A prompt (and any tokens forced after it) already run through the model, batch size 1."""

    cache: Any  # the model's KV cache over the T positions
    attention_mask: torch.Tensor  # (1, T)
    logits: torch.Tensor  # (1, vocab) float32: the distribution of the token at position T
    call: _CallStyle  # how the model's forward is called


def prefill(
    model: Any,
    attention_mask: torch.Tensor,
    *,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    lock: threading.Lock | None = None,
    cache: Any = None,
) -> Context:
    """Run the prompt once: ``attention_mask`` (1, T) with exactly one of ``input_ids`` (1, T) or ``inputs_embeds``
    (1, T, hidden); ``cache``: an empty cache to fill (default: the one the model makes)."""
    if input_ids is not None and inputs_embeds is None:
        inputs = {"input_ids": input_ids}
    elif inputs_embeds is not None and input_ids is None:
        inputs = {"inputs_embeds": inputs_embeds}
    else:
        raise ValueError("pass exactly one of input_ids and inputs_embeds")
    call = _CallStyle.of(model)
    logits, cache = forward(model, call, inputs, attention_mask, cache, lock, last_only=True)
    return Context(cache, attention_mask, logits[:, -1, :].float(), call)


class PromptCache:
    """Prefill that reuses the KV cache of the previous prompt's beginning, so only the rest of a new prompt runs.

    Every ELMD prompt starts with the same instruction (about half of a short prompt's tokens), so a server that
    answers one prompt after another skips that part. The cache of the last prompt is kept as its per-layer key and
    value tensors (never written in place: caches grow by concatenation); a new prompt sharing at least
    ``min_shared`` leading tokens with it starts from those positions. Only token prompts on a transformers
    ``DynamicCache`` of plain layers take part; the logits equal a full prefill's up to floating-point rounding.
    Not thread-safe: one user at a time (the batch engine's thread).
    """

    def __init__(self, min_shared: int = 16) -> None:
        self.min_shared = min_shared
        self._ids: list[int] = []
        self._layers: list[tuple[torch.Tensor, torch.Tensor]] = []  # (1, heads, T, d) each

    def prefill(self, model: Any, input_ids: torch.Tensor, lock: threading.Lock | None = None) -> Context:
        """:func:`prefill` of ``input_ids`` (1, T) with an all-ones mask, from the shared beginning if there is one."""
        from transformers import DynamicCache

        ids = input_ids[0].tolist()
        shared = min(common_length(ids, self._ids), len(ids) - 1)  # at least one token runs, for the logits
        mask = torch.ones_like(input_ids)  # (1, T)
        if shared < self.min_shared:
            context = prefill(model, mask, input_ids=input_ids, lock=lock)
        else:
            call = _CallStyle.of(model)
            cache = DynamicCache(ddp_cache_data=[(k[:, :, :shared], v[:, :, :shared]) for k, v in self._layers])
            rest = {"input_ids": input_ids[:, shared:]}  # (1, T - shared)
            logits, cache = forward(model, call, rest, mask, cache, lock, last_only=True)
            context = Context(cache, mask, logits[:, -1, :].float(), call)
        if plain_dynamic_cache(context.cache):
            self._ids, self._layers = ids, [(layer.keys, layer.values) for layer in context.cache.layers]
        return context


def common_length(*sequences: Sequence[int]) -> int:
    """Length of the longest beginning that all id sequences share."""
    n = 0
    for column in zip(*sequences, strict=False):
        if any(x != column[0] for x in column):
            break
        n += 1
    return n


def plain_dynamic_cache(cache: Any) -> bool:
    """Whether ``cache`` is a transformers DynamicCache of plain (not sliding-window) layers: per-layer key and value
    tensors (B, heads, T, d) that can be sliced, padded and joined."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None) or []
    return type(cache) is DynamicCache and bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def extend(model: Any, context: Context, ids: Sequence[int], lock: threading.Lock | None = None) -> Context:
    """The context after forcing ``ids``; the old context's cache is reused (and grows), so do not use it again."""
    if not ids:
        return context
    device = context.attention_mask.device
    new = torch.tensor([list(ids)], dtype=torch.long, device=device)  # (1, n)
    mask = torch.cat([context.attention_mask, context.attention_mask.new_ones(1, len(ids))], dim=1)  # (1, T + n)
    logits, cache = forward(model, context.call, {"input_ids": new}, mask, context.cache, lock, last_only=True)
    return Context(cache, mask, logits[:, -1, :].float(), context.call)


@torch.no_grad()
def score_continuations(
    model: Any,
    context: Context,
    candidates: Sequence[Sequence[int]],
    lock: threading.Lock | None = None,
    rows: Sequence[int] | None = None,
) -> torch.Tensor:
    """Log-likelihood of each candidate token sequence after the context, ``(L,)``, in one batched forward pass.

    ``sum_t log p(c_t | context, c_<t)``: the first token's term comes from the context's logits, the rest from
    one pass of the L candidates (right-padded; padding is never attended to by a real token) over a copy of the
    context's cache, one row per candidate, so the prompt is encoded once and the context stays usable. ``rows``: the
    row of a batched context (B rows, its mask 0 over each row's padding) each candidate follows (default: row 0 of a
    one-row context); positions then count each row's real tokens.
    """
    if not candidates or any(len(c) == 0 for c in candidates):
        raise ValueError("every candidate needs at least one token")
    device = context.attention_mask.device
    width = max(len(c) for c in candidates)
    padded = torch.zeros(len(candidates), width, dtype=torch.long, device=device)  # (L, W)
    valid = torch.zeros(len(candidates), width, dtype=torch.bool, device=device)  # (L, W)
    for i, candidate in enumerate(candidates):
        padded[i, : len(candidate)] = torch.tensor(list(candidate), device=device)
        valid[i, : len(candidate)] = True
    index = torch.tensor(list(rows) if rows is not None else [0] * len(candidates), device=device)  # (L,)
    first = context.logits.log_softmax(-1)[index, padded[:, 0]]  # (L,)
    if width == 1:
        return first
    cache = copy.deepcopy(context.cache)
    if rows is None:
        cache.batch_repeat_interleave(len(candidates))  # (L, heads, T, d)
    else:
        cache.batch_select_indices(index)
    mask = torch.cat([context.attention_mask[index], valid.new_ones(len(candidates), width - 1).long()], dim=1)
    inputs = {"input_ids": padded[:, :-1]}  # mask: (L, T + W - 1)
    if rows is not None:  # a batched context: each row's own positions
        inputs["position_ids"] = context.attention_mask[index].sum(1, keepdim=True) + torch.arange(width - 1)
    logits, _ = forward(model, context.call, inputs, mask, cache, lock, last_only=False)  # (L, W - 1, V)
    rest = logits.float().log_softmax(-1).gather(-1, padded[:, 1:].unsqueeze(-1)).squeeze(-1)  # (L, W - 1)
    return first + (rest * valid[:, 1:]).sum(-1)


class Chooser:
    """Picks one sequence's next tokens and says when it ends: ``processors`` (transformers logits processors: the
    copy guard, a minimum length) see the ids chosen so far, ``(1, n)``, before temperature, top-k and top-p; the
    sequence ends at an EOS id or after ``max_new_tokens``."""

    def __init__(
        self,
        sampling: Sampling,
        device: torch.device,
        *,
        max_new_tokens: int,
        eos_ids: Sequence[int],
        processors: LogitsProcessorList | None = None,
    ) -> None:
        self._pick = _picker(sampling, device)
        self._processors = processors
        self._max_new_tokens = max_new_tokens
        self._eos_ids = frozenset(eos_ids)
        self.generated = torch.empty(1, 0, dtype=torch.long, device=device)  # (1, n)

    def choose(self, logits: torch.Tensor) -> int:
        """The next token after next-token ``logits`` (1, vocab)."""
        scores = self._processors(self.generated, logits) if self._processors else logits  # type: ignore[arg-type]
        token = self._pick(self.generated, scores)  # (1,)
        self.generated = torch.cat([self.generated, token.view(1, 1)], dim=1)
        return int(token)

    def remaining(self) -> int:
        """Most tokens this sequence may still choose."""
        return self._max_new_tokens - int(self.generated.shape[1])

    def finished(self) -> bool:
        """Whether the last chosen token ends the sequence (EOS, or the length limit reached)."""
        return int(self.generated[0, -1]) in self._eos_ids or self.generated.shape[1] >= self._max_new_tokens


def decode_steps(
    model: Any, context: Context, chooser: Chooser, lock: threading.Lock | None = None
) -> Generator[int, None, None]:
    """Yield new token ids one at a time after ``context`` (an EOS id is yielded, then decoding ends).

    With greedy settings and no processors the ids equal ``model.generate(..., do_sample=False)``. Each forward pass
    runs under ``lock`` (models with an attached prefix keep per-call state), so interleaved streams stay correct.
    """
    while True:
        token = chooser.choose(context.logits)
        yield token
        if chooser.finished():
            return
        context = extend(model, context, [token], lock)


def forward(
    model: Any,
    call: _CallStyle,
    inputs: dict[str, torch.Tensor],
    mask: torch.Tensor,
    cache: Any,
    lock: threading.Lock | None,
    *,
    last_only: bool,
) -> tuple[torch.Tensor, Any]:
    """One forward pass with the KV cache: (logits (B, n or 1, vocab), cache). ``inputs`` may hold ``position_ids``
    (left-padded batches)."""
    keep = {"logits_to_keep": 1 if last_only else 0} if call.logits_to_keep else {}
    with lock or contextlib.nullcontext(), torch.no_grad():
        output = model(**inputs, attention_mask=mask, use_cache=True, **{call.cache_arg: cache}, **keep)
    return output.logits, getattr(output, call.cache_arg)


def _picker(sampling: Sampling, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Function from (ids so far (1, n), last-position scores (1, vocab)) to the next token id (1,)."""
    if not sampling.do_sample:
        return lambda _ids, scores: scores.argmax(dim=-1)
    warpers = LogitsProcessorList([TemperatureLogitsWarper(sampling.temperature)])
    if sampling.top_k > 0:
        warpers.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        warpers.append(TopPLogitsWarper(sampling.top_p))
    generator = sampling.generator(device)

    def pick(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(warpers(ids, scores), dim=-1)  # type: ignore[arg-type]
        return torch.multinomial(probs, num_samples=1, generator=generator).view(1)

    return pick
