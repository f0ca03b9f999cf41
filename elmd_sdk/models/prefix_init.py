"""A p-tuning prefix that starts as the model's own keys and values of real tokens, not as random numbers.

ChatGLM2's recipe initialises the prefix embedding from N(0, 1): every layer then attends to ``pre_seq_len``
random keys and values from the first step, which for SmolLM2-135M more than doubles the answer loss on MELD
before any training (``benchmarks/train_speed.py`` prints the loss of the base model, of a random prefix and of
this one). Li & Liang (2021, "Prefix-Tuning", section 7.3) initialise with the activations of real words instead;
with the prompt's own opening tokens the untrained prefix leaves the loss near the base model's, so training
starts from the base model and moves away from it only as far as the data asks.

The keys are taken at the output of each layer's ``k_proj`` (before rotary embedding, as the prefix keys carry
none) and the values at ``v_proj``; the rows are laid out as :class:`~elmd_sdk.models.prefix.PrefixEncoder` reads
them. Only prefixes without ``prefix_projection`` can be set this way (an MLP's input cannot be solved for).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import nn

from elmd_sdk.errors import InputError
from elmd_sdk.models.prefix import PrefixConfig, PrefixEncoder, attention_modules, prefix_encoder_of

PREFIX_STARTS = ("text", "random")  # activations of real tokens (Li & Liang), or ChatGLM2's N(0, 1) embedding


@torch.no_grad()
def prefix_from_tokens(model: Any, token_ids: Sequence[int], config: PrefixConfig) -> PrefixEncoder:
    """A prefix whose position j holds every layer's key and value of ``token_ids[j]`` (cycled to ``pre_seq_len``)
    as ``model`` computes them for that text. ``model`` must not carry a prefix."""
    if config.prefix_projection:
        raise InputError("a prefix with prefix_projection cannot start from token activations", field="prefix_start")
    if not token_ids:
        raise InputError("needs at least one token", field="prefix_start")
    if prefix_encoder_of(model) is not None:
        raise InputError("detach the model's prefix before computing a new one from it", field="prefix_start")
    ids = [token_ids[j % len(token_ids)] for j in range(config.pre_seq_len)]
    keys: dict[int, torch.Tensor] = {}
    values: dict[int, torch.Tensor] = {}
    hooks = []
    for module in attention_modules(model):
        layer = cast(int, module.layer_idx)
        k_proj, v_proj = cast(nn.Module, module.k_proj), cast(nn.Module, module.v_proj)
        hooks.append(k_proj.register_forward_hook(lambda _m, _i, out, n=layer: keys.__setitem__(n, out)))
        hooks.append(v_proj.register_forward_hook(lambda _m, _i, out, n=layer: values.__setitem__(n, out)))
    try:
        device = next(model.parameters()).device
        model(input_ids=torch.tensor([ids], device=device), use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    per_layer = [torch.stack([keys[n][0], values[n][0]]) for n in range(config.num_layers)]  # each (2, p, kv * d)
    rows = torch.stack(per_layer).permute(2, 0, 1, 3).reshape(config.pre_seq_len, config.kv_size)  # (p, kv_size)
    encoder = PrefixEncoder(config)
    encoder.embedding.weight.copy_(rows.float())
    return encoder
