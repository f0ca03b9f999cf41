"""``EmotionalRetriever``: the ERM as a LangChain retriever returning demonstration responses r' (paper 3.3)."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_community.vectorstores import FAISS
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from elmd_sdk.errors import InputError, input_error
from elmd_sdk.retrievers.index import (
    MANIFEST_FILE,
    EncoderSource,
    TextEncoder,
    load_index,
    read_manifest,
    resolve_source,
)
from elmd_sdk.retrievers.index_manifest import MAX_SCORE_BASELINE


def encoder_from_source(source: EncoderSource | None, index_dir: Path) -> TextEncoder:
    """Re-create the encoder an index manifest records (a trained ERM folder or a plain sentence encoder)."""
    from elmd_sdk.retrievers.encoder import ERMEncoder

    manifest_path = index_dir / MANIFEST_FILE
    if source is None:
        raise InputError("the index records no encoder; pass encoder= explicitly", file=manifest_path)
    if source.kind == "erm":
        if source.path is None or not Path(source.path).is_dir():
            raise InputError(
                f"the ERM folder the index was built with is not there ({source.path}); pass encoder= explicitly",
                file=manifest_path,
                field="encoder_source",
            )
        return ERMEncoder.load(source.path)
    return ERMEncoder.plain(source.path)


_SEARCH_KWARGS = ("k", "score_threshold", "exclude_dialogue_ids")


def emotion_vote(
    documents: Sequence[Document], labels: Sequence[str], key: str = "utterance_emotion"
) -> dict[str, float] | None:
    """Emotion of a query from its neighbours: each retrieved pair's ``utterance_emotion`` (or the metadata ``key``,
    e.g. ``response_emotion``) gets the document's similarity ``score`` (negative counts as 0); normalised over
    ``labels`` to sum to 1.

    None when no neighbour has a label among ``labels`` and a positive score.
    """
    votes = dict.fromkeys(labels, 0.0)
    for document in documents:
        emotion, score = document.metadata.get(key), document.metadata.get("score")
        if emotion in votes and isinstance(score, int | float):
            votes[emotion] += max(float(score), 0.0)
    total = sum(votes.values())
    return None if total <= 0 else {label: vote / total for label, vote in votes.items()}


class EmotionalRetriever(BaseRetriever):
    """Retrieve the k (u', r') pairs whose utterance u' is most similar to the query under the ERM encoder.

    Each returned Document has page_content r' and metadata ``utterance``, ``utterance_emotion``,
    ``response``, ``response_emotion``, ``dialogue_id``, ``similarity`` (inner product of the L2-normalised
    embeddings, i.e. cosine similarity) and ``score``: the similarity relative to the index's ``score_baseline``
    (the mean similarity of two random corpus utterances), ``(similarity - baseline) / (1 - baseline)``: 1 for an
    identical utterance, 0 for one as similar as a random pair. It ranks like the similarity and, unlike an ERM's raw
    cosines (all near 0.99), can be thresholded. Entries of the dialogues in ``exclude_dialogue_ids`` (field, or
    the ``exclude_dialogue_ids`` keyword of ``invoke``) are never returned, so retrieval over a training
    corpus does not find the query's own dialogue. ``invoke(query, k=n)`` overrides ``k`` for one call.

    As LangChain's ``VectorStoreRetriever``: ``score_threshold`` (field, ``search_kwargs`` entry or ``invoke``
    keyword) drops documents whose score is below it, and ``search_kwargs`` sets ``k``, ``score_threshold`` and
    ``exclude_dialogue_ids`` for every call (an ``invoke`` keyword overrides them).

    Thread safety: query encoding is serialised by a per-retriever lock (fast tokenizers are not safe to
    call concurrently); the FAISS search runs unlocked, as FAISS CPU indexes support concurrent searches.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    store: FAISS
    """The langchain-community FAISS store (inner-product distance) holding the entries."""
    encoder: TextEncoder
    """Embeds queries; must be the encoder the index was built with."""
    k: int = Field(default=1, ge=1)
    """Number of documents returned."""
    exclude_dialogue_ids: frozenset[str] = frozenset()
    """Dialogues whose entries are never returned."""
    score_threshold: float | None = None
    """Documents whose ``score`` is below this are not returned (None: no cutoff)."""
    score_baseline: float = Field(default=0.0, ge=-1.0, le=MAX_SCORE_BASELINE)
    """Mean similarity of two random corpus utterances (from the index manifest); ``score`` is relative to it."""
    search_kwargs: dict[str, Any] = Field(default_factory=dict)
    """Per-retriever search settings, LangChain style: ``k``, ``score_threshold``, ``exclude_dialogue_ids``."""

    @model_validator(mode="before")
    @classmethod
    def _warn_unknown_params(cls, values: Any) -> Any:
        """Warn about, then drop, keyword arguments the retriever does not take (typos such as ``top_k``)."""
        if isinstance(values, dict) and (unknown := sorted(set(values) - set(cls.model_fields))):
            warnings.warn(f"EmotionalRetriever ignores unknown parameter(s): {', '.join(unknown)}", stacklevel=4)
            return {key: value for key, value in values.items() if key in cls.model_fields}
        return values

    @field_validator("search_kwargs")
    @classmethod
    def _known_search_kwargs(cls, value: dict[str, Any]) -> dict[str, Any]:
        if unknown := sorted(set(value) - set(_SEARCH_KWARGS)):
            raise InputError(f"unknown key(s) {unknown}; known: {', '.join(_SEARCH_KWARGS)}", field="search_kwargs")
        return value

    _encode_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    @classmethod
    def load(
        cls,
        index: str | Path,
        k: int = 1,
        encoder: TextEncoder | None = None,
        *,
        nprobe: int | None = None,
        ef_search: int | None = None,
        **kwargs: Any,
    ) -> EmotionalRetriever:
        """Open an index folder made by ``build_index`` / ``elmd-sdk index build``.

        ``encoder=None`` loads the encoder recorded in the manifest; a given encoder must match the
        recorded fingerprint (MismatchError otherwise). ``nprobe`` (IVF) and ``ef_search`` (HNSW) trade
        speed for recall; other keywords (``exclude_dialogue_ids``, ``tags``, ...) go to the constructor.
        """
        index_dir = Path(index)
        if encoder is None:
            encoder = encoder_from_source(resolve_source(read_manifest(index_dir), index_dir), index_dir)
        loaded = load_index(index_dir, encoder, nprobe=nprobe, ef_search=ef_search)
        kwargs.setdefault("score_baseline", loaded.manifest.score_baseline)
        try:
            return cls(store=loaded.store, encoder=encoder, k=k, **kwargs)
        except ValidationError as error:
            raise input_error(error) from None

    def embed_query(self, query: str) -> np.ndarray:
        """The query's embedding (dim,), computed under the encoder lock."""
        with self._encode_lock:
            return np.asarray(self.encoder.encode([query]), dtype=np.float32)[0]

    def topic_similarities(self, query: str, utterances: Sequence[str]) -> list[float]:
        """Cosine of the sentence embeddings of ``query`` and of each of ``utterances`` (the encoder's
        ``embed_sentences``: before SSC; an encoder without it gives its retrieval vectors): how close they are in
        topic. The ERM's own scores rank by emotion; the default ERM scores every MELD dev utterance 0.95-0.97."""
        embed = getattr(self.encoder, "embed_sentences", self.encoder.encode)
        with self._encode_lock:
            vectors = np.asarray(embed([query, *utterances]), dtype=np.float32)  # (1 + n, d)
        return [float(value) for value in vectors[1:] @ vectors[0]]

    def search_by_vector(
        self,
        vector: np.ndarray,
        k: int | None = None,
        exclude_dialogue_ids: Iterable[str] | None = None,
        score_threshold: float | None = None,
    ) -> list[Document]:
        """The top-k documents for an embedding (dim,), skipping excluded dialogues and those scoring below the
        threshold, with ``score`` metadata."""
        k = k if k is not None else self.search_kwargs.get("k", self.k)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InputError(f"must be a positive integer, got {k!r}", field="k")
        if score_threshold is None:
            score_threshold = self.search_kwargs.get("score_threshold", self.score_threshold)
        if score_threshold is not None and (
            isinstance(score_threshold, bool) or not isinstance(score_threshold, int | float)
        ):
            raise InputError(f"must be a number, got {score_threshold!r}", field="score_threshold")
        excluded = (
            self.exclude_dialogue_ids
            | frozenset(self.search_kwargs.get("exclude_dialogue_ids", ()))
            | frozenset(exclude_dialogue_ids or ())
        )
        embedding = np.asarray(vector, dtype=np.float32).tolist()
        if not excluded:
            pairs = self.store.similarity_search_with_score_by_vector(embedding, k=k)
        else:
            total = self.store.index.ntotal
            fetch_k = min(total, 4 * k + 16)
            while True:
                pairs = self.store.similarity_search_with_score_by_vector(
                    embedding,
                    k=k,
                    filter=lambda metadata: metadata["dialogue_id"] not in excluded,
                    fetch_k=fetch_k,
                )
                if len(pairs) >= k or fetch_k >= total:
                    break
                fetch_k = min(total, fetch_k * 4)
        scored = [(doc, float(similarity), self._relative(float(similarity))) for doc, similarity in pairs]
        return [
            Document(page_content=doc.page_content, metadata={**doc.metadata, "similarity": similarity, "score": score})
            for doc, similarity, score in scored
            if score_threshold is None or score >= score_threshold
        ]

    def _relative(self, similarity: float) -> float:
        """The similarity on the scale where a random pair of corpus utterances scores 0 and an identical one 1."""
        similarity = min(similarity, 1.0)  # unit vectors: float rounding can put an identical pair just above 1
        return (similarity - self.score_baseline) / (1.0 - self.score_baseline)

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        exclude_dialogue_ids: Iterable[str] | None = None,
        score_threshold: float | None = None,
    ) -> list[Document]:
        if not isinstance(query, str):
            raise InputError(f"the query must be a string, got {type(query).__name__}", field="query")
        vector = self.embed_query(query)
        return self.search_by_vector(vector, k, exclude_dialogue_ids, score_threshold)

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        exclude_dialogue_ids: Iterable[str] | None = None,
        score_threshold: float | None = None,
    ) -> list[Document]:
        return await run_in_executor(
            None,
            self._get_relevant_documents,
            query,
            run_manager=run_manager.get_sync(),
            k=k,
            exclude_dialogue_ids=exclude_dialogue_ids,
            score_threshold=score_threshold,
        )
