"""langchain-tests' standard retriever suite run against EmotionalRetriever over a small fixture index."""

from __future__ import annotations

from functools import cached_property
from typing import Any

import pytest
from langchain_tests.integration_tests import RetrieversIntegrationTests
from retriever_fakes import HashEncoder, tiny_corpus

from elmd_sdk.retrievers.index_build import IndexConfig, IndexEntry, build_store
from elmd_sdk.retrievers.retriever import EmotionalRetriever

# pytest-asyncio runs in strict mode in this project and the suite's one async test carries no mark;
# the suite forbids overriding its tests, so the mark is put on the inherited function itself.
pytest.mark.asyncio(RetrieversIntegrationTests.test_ainvoke_returns_documents)


class TestEmotionalRetrieverStandard(RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[EmotionalRetriever]:
        return EmotionalRetriever

    @cached_property
    def retriever_constructor_params(self) -> dict[str, Any]:
        encoder = HashEncoder()
        entries = [IndexEntry.from_sample(s) for s in tiny_corpus()]
        vectors = encoder.encode([e.utterance for e in entries])
        return {"store": build_store(vectors, entries, IndexConfig(), encoder), "encoder": encoder}

    @property
    def retriever_query_example(self) -> str:
        return "happy words again"
