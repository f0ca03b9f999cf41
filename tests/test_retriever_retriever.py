"""EmotionalRetriever: round trip, metadata, k, dialogue exclusion, batch/async and concurrent use."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from langchain_core.documents import Document
from retriever_fakes import HashEncoder, tiny_corpus

from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.retrievers import EmotionalRetriever, build_index

FIELDS = {"utterance", "utterance_emotion", "response", "response_emotion", "dialogue_id", "similarity", "score"}


@pytest.fixture
def encoder() -> HashEncoder:
    return HashEncoder(dim=64)


@pytest.fixture
def index_dir(tmp_path: Path, encoder: HashEncoder) -> Path:
    build_index(encoder, tiny_corpus(), tmp_path / "index")
    return tmp_path / "index"


def test_round_trip_build_save_load_invoke(index_dir: Path, encoder: HashEncoder) -> None:
    retriever = EmotionalRetriever.load(index_dir, encoder=encoder)
    target = tiny_corpus()[5]
    [doc] = retriever.invoke(target.utterance.text)
    assert isinstance(doc, Document)
    assert doc.page_content == target.response.text
    assert set(doc.metadata) == FIELDS
    assert doc.metadata["utterance"] == target.utterance.text
    assert doc.metadata["utterance_emotion"] == target.utterance.emotion
    assert doc.metadata["response"] == target.response.text
    assert doc.metadata["response_emotion"] == target.response.emotion
    assert doc.metadata["dialogue_id"] == target.dialogue_id
    assert doc.metadata["similarity"] == pytest.approx(1.0, abs=1e-6)
    assert doc.metadata["score"] == pytest.approx(1.0, abs=1e-6)  # identical: 1 on the relative scale too


def test_scores_are_inner_products_in_descending_order(index_dir: Path, encoder: HashEncoder) -> None:
    retriever = EmotionalRetriever.load(index_dir, k=5, encoder=encoder)
    query = "happy words d0 t9"
    docs = retriever.invoke(query)
    q = encoder.encode([query])[0]
    baseline = retriever.score_baseline
    assert 0 < baseline < 0.75  # random pairs of this corpus share a word or two
    for doc in docs:
        expected = float(encoder.encode([doc.metadata["utterance"]])[0] @ q)
        assert doc.metadata["similarity"] == pytest.approx(expected, abs=1e-6)
        assert doc.metadata["score"] == pytest.approx((expected - baseline) / (1 - baseline), abs=1e-6)
    scores = [d.metadata["score"] for d in docs]
    assert scores == sorted(scores, reverse=True)
    # "happy", "words" and "d0" shared with the first entry: 3 of 4 words on both sides -> 3/4.
    assert docs[0].metadata["utterance"] == "happy words d0 t0"
    assert docs[0].metadata["similarity"] == pytest.approx(0.75, abs=1e-6)


def test_k_field_and_per_call_k(index_dir: Path, encoder: HashEncoder) -> None:
    retriever = EmotionalRetriever.load(index_dir, k=3, encoder=encoder)
    assert len(retriever.invoke("sad words")) == 3
    assert len(retriever.invoke("sad words", k=7)) == 7
    assert len(retriever.invoke("sad words", k=100)) == 24  # no more than the index holds
    with pytest.raises(InputError, match="field 'k'"):
        retriever.invoke("sad words", k=0)
    with pytest.raises(ValueError):
        EmotionalRetriever.load(index_dir, k=0, encoder=encoder)


def test_excluded_dialogues_are_never_returned(index_dir: Path, encoder: HashEncoder) -> None:
    query = tiny_corpus()[0]
    retriever = EmotionalRetriever.load(index_dir, k=4, encoder=encoder)
    assert retriever.invoke(query.utterance.text)[0].metadata["dialogue_id"] == "dia0"
    docs = retriever.invoke(query.utterance.text, exclude_dialogue_ids=["dia0"])
    assert len(docs) == 4 and all(d.metadata["dialogue_id"] != "dia0" for d in docs)
    # As a field, merged with per-call exclusions; k is still met while enough entries remain.
    fixed = EmotionalRetriever.load(index_dir, k=30, encoder=encoder, exclude_dialogue_ids={"dia0", "dia1"})
    docs = fixed.invoke(query.utterance.text, exclude_dialogue_ids=["dia2"])
    assert len(docs) == 12
    assert {d.metadata["dialogue_id"] for d in docs} == {"dia3", "dia4", "dia5"}


def test_exclusion_fetches_deeper_when_the_top_is_all_excluded(tmp_path: Path, encoder: HashEncoder) -> None:
    from elmd_sdk.data.records import Sample, Turn

    same = [Sample("big", Turn("A", "same words here", "sad"), Turn("B", f"r{i}", "sad")) for i in range(60)]
    other = [Sample("small", Turn("A", "different text entirely", "happy"), Turn("B", "other", "happy"))]
    build_index(encoder, same + other, tmp_path / "ix")
    retriever = EmotionalRetriever.load(tmp_path / "ix", encoder=encoder)
    [doc] = retriever.invoke("same words here", exclude_dialogue_ids=["big"])
    assert doc.metadata["dialogue_id"] == "small"


def test_batch_and_async_match_invoke(index_dir: Path, encoder: HashEncoder) -> None:
    retriever = EmotionalRetriever.load(index_dir, k=2, encoder=encoder)
    queries = [s.utterance.text for s in tiny_corpus()[:6]]
    expected = [retriever.invoke(q) for q in queries]
    assert retriever.batch(queries) == expected
    assert asyncio.run(retriever.ainvoke(queries[0])) == expected[0]
    assert asyncio.run(retriever.abatch(queries)) == expected
    assert asyncio.run(retriever.ainvoke(queries[0], k=5, exclude_dialogue_ids=["dia0"])) == retriever.invoke(
        queries[0], k=5, exclude_dialogue_ids=["dia0"]
    )


class _ThreadCheckingEncoder(HashEncoder):
    """Fails if two threads are inside encode at once (as a fast tokenizer would)."""

    def __init__(self) -> None:
        super().__init__(dim=64)
        self.inside = 0

    def encode(self, texts, batch_size=64, show_progress=False):  # type: ignore[no-untyped-def]
        self.inside += 1
        try:
            assert self.inside == 1, "encoder entered concurrently"
            time.sleep(0.0002)  # yield to other threads: without a lock they would enter now
            return super().encode(texts, batch_size, show_progress)
        finally:
            self.inside -= 1


def test_concurrent_invokes_from_threads(index_dir: Path) -> None:
    encoder = _ThreadCheckingEncoder()
    retriever = EmotionalRetriever.load(index_dir, k=3, encoder=encoder)
    queries = [s.utterance.text for s in tiny_corpus()] * 8
    expected = {q: retriever.invoke(q) for q in set(queries)}
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(retriever.invoke, queries))
    assert results == [expected[q] for q in queries]


def test_load_with_the_wrong_encoder_is_a_mismatch(index_dir: Path) -> None:
    with pytest.raises(MismatchError, match=r"index\.json: index was built with another encoder"):
        EmotionalRetriever.load(index_dir, encoder=HashEncoder(dim=64, salt="other"))


def test_load_without_encoder_needs_a_recorded_source(index_dir: Path) -> None:
    with pytest.raises(InputError, match=r"index.json: the index records no encoder; pass encoder="):
        EmotionalRetriever.load(index_dir)
