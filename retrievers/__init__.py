"""Emotional Retrieval Module (paper 3.3): SSC encoder, FAISS index storage and the LangChain retriever.

Exports load lazily, so importing a light submodule (the index manifest and its config, which the CLI reads at
start-up) does not import torch, FAISS or LangChain.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from elmd_sdk.retrievers.encoder import ERMEncoder
    from elmd_sdk.retrievers.index import load_index
    from elmd_sdk.retrievers.index_build import IndexEntry, build_index
    from elmd_sdk.retrievers.index_manifest import EncoderSource, IndexConfig
    from elmd_sdk.retrievers.retriever import EmotionalRetriever

_EXPORTS = {
    "ERMEncoder": "elmd_sdk.retrievers.encoder",
    "EmotionalRetriever": "elmd_sdk.retrievers.retriever",
    "EncoderSource": "elmd_sdk.retrievers.index_manifest",
    "IndexConfig": "elmd_sdk.retrievers.index_manifest",
    "IndexEntry": "elmd_sdk.retrievers.index_build",
    "build_index": "elmd_sdk.retrievers.index_build",
    "load_index": "elmd_sdk.retrievers.index",
}

__all__ = [
    "ERMEncoder",
    "EmotionalRetriever",
    "EncoderSource",
    "IndexConfig",
    "IndexEntry",
    "build_index",
    "load_index",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
