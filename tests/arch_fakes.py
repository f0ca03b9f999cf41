"""Tiny random causal LMs of 17 architectures for the architecture matrix (tests/test_arch_matrix.py).

Every model has hidden size at most 64, 2 layers and the tests' tiny tokenizer (``llm_fakes``); ChatGLM2 is written
in its original checkpoint layout (fused ``query_key_value``, ChatGLM2 parameter names and config fields, a
SentencePiece tokenizer) so it loads through :mod:`elmd_sdk.models.chatglm2`, and its "raw transformers" twin is the
``GlmForCausalLM`` whose weights were written out.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
import transformers
from llm_fakes import PHRASES, TEXTS, TRAINING_LABELS, save_llm, system_text, tiny_tokenizer
from safetensors.torch import save_file

# Shared shape: hidden 32 = 4 heads x 8, 2 key/value heads where the architecture has grouped attention.
SMALL: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
    "initializer_range": 0.2,  # logits sharp enough that greedy choices are far from ties
}
SMALL_NAMES = set(SMALL) - {"initializer_range"}  # the settings configs of other naming (GPT-2, XGLM) call otherwise
WINDOW = 256  # sliding window of Mistral, Gemma-2 and Gemma-3: longer than any prompt of the matrix


@dataclass(frozen=True)
class Arch:
    """One architecture: its name, transformers classes and config settings (beyond :data:`SMALL`)."""

    name: str
    config_class: str
    model_class: str
    settings: dict[str, Any] = field(default_factory=dict)
    drop: tuple[str, ...] = ()  # keys of SMALL this config does not take
    sliding: bool = False  # has sliding-window attention layers

    def make(self, tokenizer: Any, seed: int = 0) -> Any:
        """The seeded random model in eval mode, sized to ``tokenizer``."""
        settings = {k: v for k, v in SMALL.items() if k not in self.drop}
        settings |= {
            "vocab_size": len(tokenizer),
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            **self.settings,
        }
        config = getattr(transformers, self.config_class)(**settings)
        torch.manual_seed(seed)
        return getattr(transformers, self.model_class)(config).eval()


ARCHS: tuple[Arch, ...] = (
    Arch("llama", "LlamaConfig", "LlamaForCausalLM"),
    Arch("qwen2", "Qwen2Config", "Qwen2ForCausalLM"),
    Arch("qwen3", "Qwen3Config", "Qwen3ForCausalLM", {"head_dim": 8}),
    Arch("mistral", "MistralConfig", "MistralForCausalLM", {"head_dim": 8, "sliding_window": WINDOW}, sliding=True),
    Arch(
        "gemma2",
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {
            "head_dim": 8,
            "sliding_window": WINDOW,
            "query_pre_attn_scalar": 8,
            "attn_logit_softcapping": 5.0,
            "final_logit_softcapping": 30.0,
            "layer_types": ["sliding_attention", "full_attention"],
        },
        sliding=True,
    ),
    Arch(
        "gemma3",
        "Gemma3TextConfig",
        "Gemma3ForCausalLM",
        {
            "head_dim": 8,
            "sliding_window": WINDOW,
            "query_pre_attn_scalar": 8,
            "layer_types": ["sliding_attention", "full_attention"],
        },
        sliding=True,
    ),
    Arch("phi3", "Phi3Config", "Phi3ForCausalLM", {"pad_token_id": None}),
    Arch("gpt_neox", "GPTNeoXConfig", "GPTNeoXForCausalLM", drop=("num_key_value_heads",)),
    Arch(
        "gpt2",
        "GPT2Config",
        "GPT2LMHeadModel",
        {"n_embd": 32, "n_layer": 2, "n_head": 4, "n_inner": 64, "n_positions": 512},
        drop=tuple(SMALL_NAMES),
    ),
    Arch("olmo2", "Olmo2Config", "Olmo2ForCausalLM"),
    Arch("glm", "GlmConfig", "GlmForCausalLM", {"head_dim": 8}),
    Arch("glm4", "Glm4Config", "Glm4ForCausalLM", {"head_dim": 8}),
    Arch(
        "granite",
        "GraniteConfig",
        "GraniteForCausalLM",
        {"embedding_multiplier": 2.0, "attention_multiplier": 0.25, "residual_multiplier": 0.5, "logits_scaling": 2.0},
    ),
    Arch("stablelm", "StableLmConfig", "StableLmForCausalLM"),
    Arch(
        "falcon", "FalconConfig", "FalconForCausalLM", drop=("intermediate_size", "num_key_value_heads")
    ),  # multi-query
    Arch(
        "qwen3_moe",
        "Qwen3MoeConfig",
        "Qwen3MoeForCausalLM",
        {"head_dim": 8, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
    ),
)


def save_arch(arch: Arch, folder: Path) -> tuple[Path, Any]:
    """Write ``arch``'s tiny model with the tiny tokenizer to ``folder``; returns the folder and the raw model."""
    tokenizer = tiny_tokenizer()
    model = arch.make(tokenizer)
    return save_llm(folder, model, tokenizer), model


# ---------------------------------------------------------------------------------------------------------------
# ChatGLM2 in its original layout

CHATGLM2_SETTINGS: dict[str, Any] = {  # ChatGLM2's config.json fields (multi-query, qkv bias, half-head rotary)
    "model_type": "chatglm",
    "add_bias_linear": False,
    "add_qkv_bias": True,
    "apply_residual_connection_post_layernorm": False,
    "attention_dropout": 0.0,
    "ffn_hidden_size": 64,
    "fp32_residual_connection": False,
    "hidden_dropout": 0.0,
    "hidden_size": 32,
    "kv_channels": 8,
    "layernorm_epsilon": 1e-05,
    "multi_query_attention": True,
    "multi_query_group_num": 2,
    "num_attention_heads": 4,
    "num_layers": 2,
    "post_layer_norm": True,
    "rmsnorm": True,
    "seq_length": 2048,
    "torch_dtype": "float32",
}


def _sentencepiece() -> bytes:
    """A tiny byte-fallback SentencePiece model (identity normalisation, like ChatGLM2's) that knows the English
    prompt's words, so the matrix's prompts stay short."""
    from elmd_sdk.data.labels import EMOTIONS

    prompt = [system_text(EMOTIONS), system_text(TRAINING_LABELS), *PHRASES, *TEXTS]
    corpus = [*prompt, *(f"Emotion: {label}" for label in EMOTIONS)] * 8
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=out, vocab_size=600, minloglevel=2, model_type="bpe",
        byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",
        remove_extra_whitespaces=False, hard_vocab_limit=False,
    )  # fmt: skip
    return out.getvalue()


def save_chatglm2(folder: Path, seed: int = 0) -> tuple[Path, Any]:
    """A ChatGLM2 checkpoint folder (config.json, model.safetensors, tokenizer.model) made from a random
    ``GlmForCausalLM``; returns the folder and that model (what the folder must load as)."""
    from elmd_sdk.models.chatglm2 import SPECIAL_TOKENS, glm_config_from_chatglm2

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(_sentencepiece())
    pieces = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).get_piece_size()
    raw = {**CHATGLM2_SETTINGS, "padded_vocab_size": pieces + len(SPECIAL_TOKENS), "eos_token_id": 2,
           "pad_token_id": 0}  # fmt: skip
    config = glm_config_from_chatglm2(raw)
    config.initializer_range = 0.2
    torch.manual_seed(seed)
    model = transformers.GlmForCausalLM(config).eval()
    save_file(_chatglm2_names(model.state_dict()), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(raw), encoding="utf-8")
    return folder, model


def _chatglm2_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``GlmForCausalLM`` weights under ChatGLM2's original names: q, k, v fused as [q | k | v] (multi-query)."""
    out = {
        "transformer.embedding.word_embeddings.weight": state["model.embed_tokens.weight"],
        "transformer.encoder.final_layernorm.weight": state["model.norm.weight"],
        "transformer.output_layer.weight": state["lm_head.weight"],
    }
    layers = 1 + max(int(name.split(".")[2]) for name in state if name.startswith("model.layers."))
    for i in range(layers):
        ours, theirs = f"model.layers.{i}.", f"transformer.encoder.layers.{i}."
        attn = ours + "self_attn."
        for kind in ("weight", "bias"):
            parts = [state[f"{attn}{p}_proj.{kind}"] for p in "qkv"]
            out[f"{theirs}self_attention.query_key_value.{kind}"] = torch.cat(parts).contiguous()
        out |= {
            theirs + "input_layernorm.weight": state[ours + "input_layernorm.weight"],
            theirs + "post_attention_layernorm.weight": state[ours + "post_attention_layernorm.weight"],
            theirs + "self_attention.dense.weight": state[attn + "o_proj.weight"],
            theirs + "mlp.dense_h_to_4h.weight": state[ours + "mlp.gate_up_proj.weight"],
            theirs + "mlp.dense_4h_to_h.weight": state[ours + "mlp.down_proj.weight"],
        }
    return {k: v.contiguous() for k, v in out.items()}


CHATGLM2 = "chatglm2"
NAMES: tuple[str, ...] = (*(a.name for a in ARCHS), CHATGLM2)
SAVERS: dict[str, Callable[[Path], tuple[Path, Any]]] = {
    **{a.name: (lambda folder, a=a: save_arch(a, folder)) for a in ARCHS},
    CHATGLM2: save_chatglm2,
}
SLIDING = {a.name for a in ARCHS if a.sliding}
