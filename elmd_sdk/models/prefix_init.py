"""A p-tuning prefix that starts as the model's own keys and values of real tokens, not as random numbers.

ChatGLM2's recipe initialises the prefix embedding from N(0, 1): every layer then attends to ``pre_seq_len``
random keys and values from the first step, which for SmolLM2-135M more than doubles the answer loss on MELD
before any training (``benchmarks/train_speed.py`` prints the loss of the base model, of a random prefix and of
this one). Li & Liang (2021, "Prefix-Tuning", section 7.3) initialise with the activations of real words instead;
with the prompt's own opening tokens the untrained prefix leaves the loss near the base model's, so training
starts from the base model and moves away from it only as far as the data asks.

The rows are the keys and values the model caches for the text at its positions 0..p-1, each key turned back to no
position (prefix keys carry none; :mod:`elmd_sdk.models.rotary`). Reading the cache needs nothing about how
attention is built: fused q/k/v projections (GPT-2, GPT-NeoX, Phi-3, Falcon), q/k norms (Qwen3, OLMo-2, Gemma-3)
and multi-query heads all give what attention itself sees. (Caching the text with every token at position 0 would
need no turn, but its hidden states see no order: on SmolLM2-135M's first 64 MELD samples the untrained prefix's
answer loss was 3.085 nats/token that way against 2.987 this way, the base model's 2.924.) Only prefixes without
``prefix_projection`` can be set this way (an MLP's input cannot be solved for).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from elmd_sdk.errors import InputError
from elmd_sdk.models.prefix import PrefixConfig, PrefixEncoder, cached_keys_values, prefix_encoder_of
from elmd_sdk.models.rotary import key_turn

PREFIX_STARTS = ("text", "random")  # activations of real tokens (Li & Liang), or ChatGLM2's N(0, 1) embedding


@torch.no_grad()
def prefix_from_tokens(model: Any, token_ids: Sequence[int], config: PrefixConfig) -> PrefixEncoder:
    """A prefix whose position j holds every layer's key (turned back to no position) and value of ``token_ids[j]``
    (cycled to ``pre_seq_len``) as ``model`` caches them for that text. ``model`` must not carry a prefix."""
    if config.prefix_projection:
        raise InputError("a prefix with prefix_projection cannot start from token activations", field="prefix_start")
    if not token_ids:
        raise InputError("needs at least one token", field="prefix_start")
    if prefix_encoder_of(model) is not None:
        raise InputError("detach the model's prefix before computing a new one from it", field="prefix_start")
    try:
        turn = key_turn(model)
    except InputError as error:
        raise InputError(f"{error.problem}: start the prefix at random instead", field="prefix_start") from None
    p = config.pre_seq_len
    layers = cached_keys_values(model, [token_ids[j % len(token_ids)] for j in range(p)])  # (1, kv, p, d) each
    back = -torch.arange(p)  # each text position turned back to none
    per_layer = [
        torch.stack([turn(i, k[0].transpose(0, 1), back) if turn else k[0].transpose(0, 1), v[0].transpose(0, 1)])
        for i, (k, v) in enumerate(layers)
    ]  # each (2, p, kv, d)
    rows = torch.stack(per_layer).permute(2, 0, 1, 3, 4).reshape(p, config.kv_size)  # (p, layers * 2 * kv * d)
    encoder = PrefixEncoder(config)
    encoder.embedding.weight.copy_(rows.float())
    return encoder
