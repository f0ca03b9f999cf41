"""Language models: load_llm (GGUF cache, ChatGLM2, any causal LM), p-tuning v2 prefix, LangChain chat model.

Exports are resolved lazily so ``import elmd_sdk.models`` stays cheap (torch/transformers load on first use).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from elmd_sdk.models.chat_model import ELMDChatModel
    from elmd_sdk.models.chatglm2 import ChatGLM2Tokenizer, load_chatglm2
    from elmd_sdk.models.gguf_cache import ensure_gguf_cache
    from elmd_sdk.models.llm import llm_fingerprint, load_llm
    from elmd_sdk.models.prefix import PrefixConfig, PrefixEncoder, attach_prefix, detach_prefix, prefix_encoder_of
    from elmd_sdk.models.rendering import VIDEO_PLACEHOLDER, prompt_pieces, tokenize_pieces
    from elmd_sdk.models.splice import SplicedInputs, splice_video_embeds

_EXPORTS = {
    "ELMDChatModel": "elmd_sdk.models.chat_model",
    "VIDEO_PLACEHOLDER": "elmd_sdk.models.rendering",
    "prompt_pieces": "elmd_sdk.models.rendering",
    "SplicedInputs": "elmd_sdk.models.splice",
    "splice_video_embeds": "elmd_sdk.models.splice",
    "tokenize_pieces": "elmd_sdk.models.rendering",
    "load_llm": "elmd_sdk.models.llm",
    "llm_fingerprint": "elmd_sdk.models.llm",
    "ensure_gguf_cache": "elmd_sdk.models.gguf_cache",
    "ChatGLM2Tokenizer": "elmd_sdk.models.chatglm2",
    "load_chatglm2": "elmd_sdk.models.chatglm2",
    "PrefixConfig": "elmd_sdk.models.prefix",
    "PrefixEncoder": "elmd_sdk.models.prefix",
    "attach_prefix": "elmd_sdk.models.prefix",
    "detach_prefix": "elmd_sdk.models.prefix",
    "prefix_encoder_of": "elmd_sdk.models.prefix",
}

__all__ = [
    "VIDEO_PLACEHOLDER",
    "ChatGLM2Tokenizer",
    "ELMDChatModel",
    "PrefixConfig",
    "PrefixEncoder",
    "SplicedInputs",
    "attach_prefix",
    "detach_prefix",
    "ensure_gguf_cache",
    "llm_fingerprint",
    "load_chatglm2",
    "load_llm",
    "prefix_encoder_of",
    "prompt_pieces",
    "splice_video_embeds",
    "tokenize_pieces",
]


def __getattr__(name: str) -> Any:
    """Import the defining module of an exported name on first access."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'elmd_sdk.models' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
