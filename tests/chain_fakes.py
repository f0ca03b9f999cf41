"""Test helpers for the chain, bundle and chat tests: a tiny random causal LM with a byte-level BPE tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from llm_fakes import chatml_tokenizer, save_llm, tiny_llama

TEXTS = [
    "Emotion: happy\nResponse: That is wonderful news, congratulations!",
    "Emotion: sad\nResponse: I am so sorry to hear that.",
    "You are an empathetic partner in a conversation. Background: history utterance reply video",
    "User: I finally got the job! Assistant: When do you start? The dog passed away this morning.",
]


def tiny_tokenizer() -> Any:
    """A byte-level BPE tokenizer (a few hundred tokens) with ChatML-style special tokens and chat template."""
    from tokenizers import pre_tokenizers

    return chatml_tokenizer(TEXTS * 4, 400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)


def tiny_llm(seed: int = 0, layers: int = 2, context: int = 2048) -> tuple[Any, Any]:
    """A randomly initialised Llama causal LM (hidden 32) and its tokenizer, in eval mode."""
    tokenizer = tiny_tokenizer()
    return tiny_llama(tokenizer, seed, num_hidden_layers=layers, max_position_embeddings=context), tokenizer


def tiny_chat(**settings: Any) -> Any:
    """An ELMDChatModel over :func:`tiny_llm`, greedy, 12 new tokens unless ``settings`` say otherwise."""
    from elmd_sdk.models.chat_model import ELMDChatModel

    model, tokenizer = tiny_llm()
    return ELMDChatModel(hf_model=model, tokenizer=tokenizer, **{"do_sample": False, "max_new_tokens": 12, **settings})


def save_tiny_llm(path: Path, seed: int = 0, layers: int = 2) -> Path:
    """Write a tiny LLM folder (safetensors + tokenizer) that ``load_llm(path)`` reads."""
    return save_llm(path, *tiny_llm(seed, layers))


class FixedRetriever(BaseRetriever):
    """Returns the same demonstration for every query, and counts the queries."""

    response: str = "Congratulations, you earned it!"
    calls: int = 0

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        self.calls += 1
        metadata = {"utterance": "I got promoted", "utterance_emotion": "happy", "response": self.response,
                    "response_emotion": "happy", "score": 0.9, "dialogue_id": "d1"}  # fmt: skip
        return [Document(page_content=self.response, metadata=metadata)]


def tiny_bundle(root: Path, *, pre_seq_len: int = 4, recorded_pre_seq_len: int | None = None) -> Path:
    """A bundle with a tiny random LLM inside it and a p-tuning prefix, no retrieval, greedy, 6 new tokens."""
    from elmd_sdk.bundle import BundleManifest, save_manifest
    from elmd_sdk.data import EMOTIONS
    from elmd_sdk.models.llm import llm_fingerprint, load_llm
    from elmd_sdk.models.prefix import PrefixConfig, PrefixEncoder

    save_tiny_llm(root / "llm")
    model, _ = load_llm(root / "llm")
    PrefixEncoder(PrefixConfig.for_model(model, pre_seq_len)).save(root / "prefix")
    manifest = BundleManifest(
        name="t",
        labels=list(EMOTIONS),
        base_llm="llm",
        base_llm_config_sha256=llm_fingerprint(model)["config_sha256"],
        prefix_dir="prefix",
        pre_seq_len=recorded_pre_seq_len or pre_seq_len,
        generation={"do_sample": False, "max_new_tokens": 6},
    )
    save_manifest(root, manifest)
    return root
