"""Emotional Retrieval Module (paper 3.3): SSC encoder, FAISS index storage and the LangChain retriever."""

from elmd_sdk.retrievers.encoder import ERMEncoder
from elmd_sdk.retrievers.index import load_index
from elmd_sdk.retrievers.index_build import IndexConfig, IndexEntry, build_index
from elmd_sdk.retrievers.index_manifest import EncoderSource
from elmd_sdk.retrievers.retriever import EmotionalRetriever

__all__ = [
    "ERMEncoder",
    "EmotionalRetriever",
    "EncoderSource",
    "IndexConfig",
    "IndexEntry",
    "build_index",
    "load_index",
]
