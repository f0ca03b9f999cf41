"""Test helpers for the chain, bundle and chat tests: a fixed retriever and a bundle around the tiny LLM.

The tiny tokenizer, LLM and chat model come from ``llm_fakes`` (re-exported here under the names tests import).
"""

from __future__ import annotations

from pathlib import Path

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from llm_fakes import chatml_tokenizer, save_tiny_llm, tiny_chat, tiny_llama, tiny_llm, tiny_tokenizer

__all__ = [
    "FixedRetriever",
    "chatml_tokenizer",
    "save_tiny_llm",
    "tiny_bundle",
    "tiny_chat",
    "tiny_llama",
    "tiny_llm",
    "tiny_tokenizer",
]


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
