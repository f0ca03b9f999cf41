"""Test helpers for the chain, bundle and chat tests: a tiny random causal LM with a byte-level BPE tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEXTS = [
    "Emotion: happy\nResponse: That is wonderful news, congratulations!",
    "Emotion: sad\nResponse: I am so sorry to hear that.",
    "You are an empathetic partner in a conversation. Background: history utterance reply video",
    "User: I finally got the job! Assistant: When do you start? The dog passed away this morning.",
]


def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer (a few hundred tokens) with ChatML-style special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(TEXTS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", bos_token="<|im_start|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_llm(seed: int = 0, layers: int = 2, context: int = 2048) -> tuple[Any, Any]:
    """A randomly initialised Llama causal LM (hidden 32) and its tokenizer, in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    return model, tokenizer


def save_tiny_llm(path: Path, seed: int = 0, layers: int = 2) -> Path:
    """Write a tiny LLM folder (safetensors + tokenizer) that ``load_llm(path)`` reads."""
    model, tokenizer = tiny_llm(seed, layers)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


class FixedRetriever(BaseRetriever):
    """Returns the same demonstration for every query, and counts the queries."""

    response: str = "Congratulations, you earned it!"
    calls: int = 0

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        self.calls += 1
        metadata = {"utterance": "I got promoted", "utterance_emotion": "happy", "response": self.response,
                    "response_emotion": "happy", "score": 0.9, "dialogue_id": "d1"}  # fmt: skip
        return [Document(page_content=self.response, metadata=metadata)]
