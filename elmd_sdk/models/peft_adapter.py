"""A p-tuning v2 prefix saved as a PEFT prefix-tuning adapter, so ``PeftModel.from_pretrained(base, folder)`` loads it.

PEFT 0.21.2 hands the prefix to the model as an already filled KV cache, so the real tokens sit at positions
p..p+T-1 (p = ``num_virtual_tokens``); elmd-sdk, like ChatGLM2, gives them positions 0..T-1. Neither rotates the
prefix keys. Under RoPE the scores between real tokens depend only on position differences and agree, but the query
of token i meets each prefix key k rotated by R(p + i) under PEFT and by R(i) here. Saving every prefix key turned to
position p, k' = R(p) k, gives (R(p + i) q) . k' = (R(i) q) . k, so PEFT's logits equal elmd-sdk's to 5e-6
(tests/test_peft_adapter.py, tiny Llama and ChatGLM2-style GLM; without the turn they differ by up to 3.6 on logits
of size 3.7). Each layer's keys turn with that layer's rotary embedding (:mod:`elmd_sdk.models.rotary`). Where
positions are not rotary (GPT-2's learned position embeddings) PEFT's shift of every token cannot be undone by any
prefix key: the format cannot express the model's positions, and :func:`export_peft_adapter` writes
``peft_export.json`` saying so instead of an adapter. The adapter holds the computed prefix (after the optional
projection MLP), as PEFT's inference mode stores it, so ``PeftModel.from_pretrained`` loads it for inference only
(PEFT refuses ``is_trainable=True`` for prompt-learning adapters).

elmd-sdk keeps its own attention path (:mod:`elmd_sdk.models.prefix`) for generation and training, where PEFT 0.21.2
with transformers 5.24 fails:

- ``PeftModel.generate(input_ids=...)`` silently drops the prefix: generate passes its own empty cache as ``cache``,
  PEFT injects the prefix as the deprecated ``past_key_values``, and the model keeps ``cache`` ("Both
  `past_key_values` and `cache` are set ... ignoring deprecated `past_key_values`"), so the tokens are the base
  model's.
- ``PeftModel.generate(inputs_embeds=...)``, which the video tokens E_v need, raises ``ValueError: You passed
  `inputs_embeds` to `.generate()`, but the model class LlamaForCausalLM doesn't have its forwarding implemented.``
  (PEFT swaps in a ``prepare_inputs_for_generation(*args, **kwargs)`` that hides the ``inputs_embeds`` parameter).
- Gradient checkpointing: ``ValueError: PREFIX_TUNING does not work with gradient checkpointing.``
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from elmd_sdk.errors import InputError
from elmd_sdk.io import atomic_write_json, save_tensors
from elmd_sdk.models.prefix import PrefixEncoder
from elmd_sdk.models.rotary import KeyTurn, key_turn

# The tensor name under which PEFT saves (and reads back) a prompt-learning adapter's prefix.
PEFT_PREFIX_TENSOR = "prompt_embeddings"
# Written in the prefix folder instead of the adapter where PEFT's format cannot express the model's positions.
PEFT_EXPORT_RECORD = "peft_export.json"


def export_peft_adapter(
    encoder: PrefixEncoder, model: Any, directory: str | Path, base_model_name_or_path: str | None = None
) -> str | None:
    """:func:`save_peft_adapter`, or, where PEFT's prefix format cannot express ``model``'s positions,
    ``peft_export.json`` recording why (``{"peft_adapter": false, "reason": ...}``). Returns that reason, or None
    when the adapter was written."""
    reason = peft_inexpressible(model)
    if reason is None:
        save_peft_adapter(encoder, model, directory, base_model_name_or_path)
    else:
        atomic_write_json(Path(directory) / PEFT_EXPORT_RECORD, {"peft_adapter": False, "reason": reason})
    return reason


def peft_inexpressible(model: Any) -> str | None:
    """Why PEFT's prefix format cannot hold an elmd-sdk prefix for ``model`` (None: it can)."""
    try:
        _key_turn(model)
    except InputError as error:
        return error.problem
    return None


def save_peft_adapter(
    encoder: PrefixEncoder, model: Any, directory: str | Path, base_model_name_or_path: str | None = None
) -> Path:
    """Write ``encoder``'s prefix for ``model`` as PEFT's ``adapter_model.safetensors`` then ``adapter_config.json``.

    ``model`` is the base LLM the prefix was trained on (its rotary embedding turns the keys, see the module
    docstring); ``base_model_name_or_path`` goes into the config for ``AutoPeftModelForCausalLM``. Returns the folder.
    Raises :class:`InputError` where the format cannot express the model's positions (:func:`peft_inexpressible`).
    """
    from peft import PrefixTuningConfig
    from peft.utils.constants import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME

    directory = Path(directory)
    cfg = encoder.config
    cfg.check_fits(model)
    turn = _key_turn(model)
    p, layers, heads, d = cfg.pre_seq_len, cfg.num_layers, cfg.num_kv_heads, cfg.head_dim
    with torch.no_grad():
        kv = encoder.rows().detach().float().cpu().view(p, layers, 2, heads, d)  # [:, i, 0] keys, [:, i, 1] values
        at_p = torch.full((p,), p)  # every prefix key turned to position p
        keys = torch.stack([turn(i, kv[:, i, 0], at_p) for i in range(layers)], dim=1)  # (p, layers, heads, d)
        rows = torch.stack([keys, kv[:, :, 1]], dim=2).reshape(p, cfg.kv_size)  # PEFT's layout is ours
    save_tensors(directory / SAFETENSORS_WEIGHTS_NAME, {PEFT_PREFIX_TENSOR: rows}, metadata={"format": "pt"})
    config = PrefixTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=p,
        num_layers=layers,
        num_attention_heads=heads,  # PEFT's name for the key/value heads the prefix fills
        token_dim=heads * d,
        prefix_projection=False,  # the saved rows are already projected
        inference_mode=True,
        base_model_name_or_path=base_model_name_or_path,
    )
    atomic_write_json(directory / CONFIG_NAME, config.to_dict())
    return directory


def _key_turn(model: Any) -> KeyTurn:
    """The model's key turn (:func:`elmd_sdk.models.rotary.key_turn`); :class:`InputError` where there is none."""
    turn = key_turn(model)
    if turn is None:
        raise InputError(
            f"{type(model).__name__} has no rotary position embedding: PEFT's prefix moves every token pre_seq_len "
            "positions on, which changes its position embeddings and no prefix key can undo; PEFT's format cannot "
            "express elmd-sdk's prefix for it"
        )
    return turn
