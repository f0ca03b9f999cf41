"""Builders of the tiny random LLMs the tests use: a ChatML byte-level BPE tokenizer and a small seeded Llama."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HIDDEN = 32


def chatml_tokenizer(corpus: list[str], vocab_size: int, **trainer: Any) -> PreTrainedTokenizerFast:
    """Byte-level BPE trained in memory on ``corpus`` (``trainer``: more BpeTrainer settings), with ChatML specials."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    backend.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, **trainer))
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHATML
    return tokenizer


def tiny_llama(tokenizer: Any = None, seed: int = 0, **config: Any) -> LlamaForCausalLM:
    """A seeded random Llama in eval mode: hidden 32, 2 layers, 4 heads, 2 key/value heads unless ``config`` overrides.

    With ``tokenizer``, its vocabulary size and BOS/EOS/PAD ids; without, ``config`` gives ``vocab_size``.
    """
    settings: dict[str, Any] = {
        "hidden_size": HIDDEN,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
    }
    if tokenizer is not None:
        settings["vocab_size"] = len(tokenizer)
        settings["bos_token_id"] = tokenizer.bos_token_id
        settings["eos_token_id"] = tokenizer.eos_token_id
        settings["pad_token_id"] = tokenizer.pad_token_id
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(**{**settings, **config})).eval()


def save_llm(folder: Path, model: Any, tokenizer: Any) -> Path:
    """Write ``model`` and ``tokenizer`` as a checkpoint folder that ``load_llm(folder)`` reads."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
