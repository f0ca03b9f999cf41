"""Turning keys as a model's rotary position embedding turns them, layer by layer.

Two places need a key at another position than the one it was computed at: the PEFT export turns every prefix key
to position ``pre_seq_len`` (:mod:`elmd_sdk.models.peft_adapter`), and a text-started prefix turns the keys a model
cached for its text at positions 0..p-1 back to no position (:mod:`elmd_sdk.models.prefix_init`). Both use the
model's own rotary module and its file's ``apply_rotary_pos_emb``, per layer (Gemma-3's differs between sliding and
full layers), on the rotated part of each head (partial rotary: GPT-NeoX, Phi-3, StableLM, GLM); any attention
scaling of cos/sin is removed, so the turn is a pure rotation.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import torch

from elmd_sdk.errors import InputError

KeyTurn = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]


def key_turn(model: Any) -> KeyTurn | None:
    """``turn(layer, keys (n, heads, d), positions (n,))``: each key rotated as layer ``layer`` rotates a key at its
    position (a negative position turns back). None when the model has no rotary embedding (its positions enter
    elsewhere, e.g. GPT-2's learned position embeddings); :class:`InputError` when it has several or no
    ``apply_rotary_pos_emb`` beside it."""
    name = type(model).__name__
    rotary = [m for m in model.modules() if any(b.endswith("inv_freq") for b, _ in m.named_buffers(recurse=False))]
    if not rotary:
        return None
    apply = getattr(importlib.import_module(type(model).__module__), "apply_rotary_pos_emb", None)
    if len(rotary) != 1 or apply is None:
        raise InputError(f"{name} has no single rotary embedding with apply_rotary_pos_emb beside it")
    embedding = rotary[0]
    layer_types = getattr(model.config.get_text_config(), "layer_types", None)
    per_type = "layer_type" in inspect.signature(embedding.forward).parameters  # Gemma-3: one rotary per layer type

    def turn(layer: int, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        x = keys.transpose(0, 1).unsqueeze(0)  # (1, heads, n, d)
        extra = {"layer_type": layer_types[layer]} if per_type and layer_types else {}
        back = positions < 0
        at = positions.abs().view(1, -1).to(x.device)  # (1, n)
        cos, sin = embedding(x, at, **extra)  # (1, n, rotary dims)
        scale = torch.sqrt(cos**2 + sin**2)  # the attention scaling some rotary types multiply into both
        cos, sin = cos / scale, torch.where(back.view(1, -1, 1).to(x.device), -sin, sin) / scale  # R(-t) = R(t)^T
        rotated = cos.shape[-1]  # partial rotary turns the first dims of each head and passes the rest
        turned, _ = apply(x[..., :rotated], x[..., :rotated], cos, sin)
        return torch.cat([turned, x[..., rotated:]], dim=-1)[0].transpose(0, 1)  # (n, heads, d)

    return turn
