"""One reply's parts around the chat model call: what retrieval gave the turn (:class:`Retrieved`: the
demonstration R and the utterance-emotion vote), the reader of the reply (:class:`ReplyChunks`), the labels a reply may
take and the call's options."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import BaseMessage

from elmd_sdk.answer.reading import AnswerReader
from elmd_sdk.answer.result import ELMDResult
from elmd_sdk.chains.vote_calibration import VoteCalibration
from elmd_sdk.errors import InputError
from elmd_sdk.retrievers.retriever import emotion_vote


@dataclass(frozen=True)
class EmotionEvidence:
    """What one input's response emotion rests on: the LLM's uncalibrated log-probability of each label (in the
    chain's label order) and the neighbours' votes (None without retrieval)."""

    llm_log_probs: list[float]
    utterance_vote: dict[str, float] | None
    response_vote: dict[str, float] | None
    demonstration_emotion: str | None = None  # e', the response emotion of the demonstration R


@dataclass(frozen=True)
class Retrieved:
    """What retrieval gave one turn: the demonstration R, the vote of the neighbours' utterance emotions (the user's
    recognised emotion) and the vote of their response emotions."""

    demonstration: Document | None = None
    utterance_emotion: str | None = None
    utterance_emotion_scores: dict[str, float] | None = None
    response_emotion_scores: dict[str, float] | None = None

    @classmethod
    def of(
        cls,
        documents: Sequence[Document],
        labels: Sequence[str],
        min_score: float | None = None,
        topics: Sequence[float] | None = None,
        min_topic: float | None = None,
        calibration: VoteCalibration | None = None,
    ) -> Retrieved:
        """R is the nearest document whose ``score`` is at least ``min_score``; given each document's topic
        similarity to the utterance (``topics``), the one of them closest in topic, if at least ``min_topic``
        (recorded as its ``topic_similarity``). Every document votes; the vote for the utterance emotion is
        recalibrated by ``calibration`` when given."""
        kept = [i for i, document in enumerate(documents) if min_score is None or _score(document) >= min_score]
        if topics is not None and min_topic is not None:
            kept = sorted((i for i in kept if topics[i] >= min_topic), key=lambda i: -topics[i])  # stable: ERM order
        nearest = documents[kept[0]] if kept else None
        if nearest is not None and topics is not None:
            nearest = Document(nearest.page_content, metadata={**nearest.metadata, "topic_similarity": topics[kept[0]]})
        scores = emotion_vote(documents, labels)
        if calibration is not None:
            scores = calibration.apply(scores, labels)
        return cls(
            demonstration=nearest,
            utterance_emotion=None if scores is None else max(scores, key=scores.__getitem__),
            utterance_emotion_scores=scores,
            response_emotion_scores=emotion_vote(documents, labels, key="response_emotion"),
        )


def _score(document: Document) -> float:
    score = document.metadata.get("score", 0.0)
    return float(score) if isinstance(score, int | float) else 0.0


class ReplyChunks(AnswerReader):
    """The chain's :class:`AnswerReader`: its first chunk also carries the demonstration and the utterance emotion;
    closed mode requires the emotion the chat model chose."""

    def __init__(self, labels: Sequence[str], closed: bool, extras: ELMDResult, options: dict[str, Any]) -> None:
        super().__init__(labels, closed=closed)
        self.options = options  # keyword arguments of the chat model call
        self._extras: ELMDResult | None = extras  # added to the first chunk that goes out

    def feed(self, piece: str | BaseMessage) -> list[ELMDResult]:
        return self._tagged(super().feed(piece))

    def finish(self) -> list[ELMDResult]:
        return self._tagged(super().finish())

    def _tagged(self, chunks: list[ELMDResult]) -> list[ELMDResult]:
        if chunks and self._extras is not None:
            chunks, self._extras = [chunks[0] + self._extras, *chunks[1:]], None
        return chunks


def narrowed(chain_wide: tuple[str, ...] | None, given: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The labels a reply may take: the input's ``allowed_emotions`` that the chain allows (either set alone when
    the other is None); an :class:`InputError` when they share none."""
    if chain_wide is None or given is None:
        return chain_wide if given is None else given
    kept = tuple(label for label in given if label in chain_wide)
    if not kept:
        raise InputError(f"none of {list(given)} is among this chain's {list(chain_wide)}", field="allowed_emotions")
    return kept


def call_options(options: dict[str, Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    """The chat model call's options: the chain's, then the caller's (``stop`` strings are added to the chain's)."""
    merged = {**options, **kwargs}
    if "stop" in kwargs:
        extra = [kwargs["stop"]] if isinstance(kwargs["stop"], str) else list(kwargs["stop"] or [])
        merged["stop"] = [*options.get("stop", []), *extra]
    return merged


def added(chunks: Sequence[ELMDResult]) -> ELMDResult:
    result = ELMDResult(None, "")
    for chunk in chunks:
        result = result + chunk
    return result
