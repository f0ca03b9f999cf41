"""What the ELMD chain returns, and what its stream chunks are: :class:`ELMDResult`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from langchain_core.documents import Document


@dataclass(frozen=True)
class ELMDResult:
    """What the chain returns: the response emotion (None if the model gave none), the response, the retrieved
    demonstration R (None without retrieval), the probability of every label as the response emotion (closed-set
    decoding; None in free mode) and the emotion recognised in the user's utterance u with its probabilities (a
    similarity-weighted vote of the nearest indexed utterances; None without retrieval), the tokens the chat model
    read and wrote (``usage``: ``input_tokens``, ``output_tokens``, ``total_tokens``; None when the chat model does
    not report them) and why the reply ended (``finish_reason``: ``"stop"`` or ``"length"``).

    Stream chunks are ELMDResults too and add up (``a + b``): responses concatenate, usage counts add, the first
    known value of every other field is kept (the first chunk carries them, the last the finish reason).
    """

    emotion: str | None
    response: str
    demonstration: Document | None = None
    emotion_scores: dict[str, float] | None = None
    utterance_emotion: str | None = None
    utterance_emotion_scores: dict[str, float] | None = None
    usage: dict[str, int] | None = None
    finish_reason: str | None = None

    def __add__(self, other: ELMDResult) -> ELMDResult:
        """Concatenate two stream chunks."""
        if not isinstance(other, ELMDResult):
            return NotImplemented
        kept = {
            f.name: getattr(self, f.name) if getattr(self, f.name) is not None else getattr(other, f.name)
            for f in fields(self)
            if f.name not in ("response", "usage")
        }
        return ELMDResult(response=self.response + other.response, usage=add_usage(self.usage, other.usage), **kept)

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-ready data (the demonstration as its text and metadata)."""
        data = asdict(replace(self, demonstration=None))
        demo = self.demonstration
        data["demonstration"] = None if demo is None else {"text": demo.page_content, "metadata": dict(demo.metadata)}
        return data


def add_usage(a: dict[str, int] | None, b: dict[str, int] | None) -> dict[str, int] | None:
    """Token counts of two chunks added key by key (None when neither has any)."""
    if a is None or b is None:
        return a if b is None else b
    return {key: a.get(key, 0) + b.get(key, 0) for key in {**a, **b}}
