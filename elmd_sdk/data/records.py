"""The records of the data layer: the response-generation sample every command reads and writes (as one JSON
object per JSONL line), its turns and video reference, and a corpus's annotated sentences and dialogues as the
loaders read them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Turn:
    """One utterance of a dialogue: who said it, what, and with which emotion label (None if unknown)."""

    speaker: str
    text: str
    emotion: str | None = None


@dataclass(frozen=True)
class VideoRef:
    """A video clip: a file, optionally cut to ``[start, end]`` seconds."""

    path: str
    start: float | None = None
    end: float | None = None


@dataclass(frozen=True)
class Sample:
    """One training or evaluation example: history H, current utterance u and its response r (paper 3.1)."""

    dialogue_id: str
    utterance: Turn
    response: Turn
    history: list[Turn] = field(default_factory=list)
    background: str | None = None
    video: VideoRef | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict (the native JSONL schema)."""
        return asdict(self)


@dataclass(frozen=True)
class Sentence:
    """One annotated sentence as its corpus stores it (raw label), with where it came from for errors."""

    speaker: str
    text: str
    label: str
    file: str
    line: int
    label_field: str
    video: VideoRef | None = None


@dataclass(frozen=True)
class Dialogue:
    """The sentences of one dialogue, in order, and the show it comes from where the corpus names one."""

    dialogue_id: str
    sentences: list[Sentence]
    show: str | None = None  # M3ED: the show key; CPED: TV_ID; MELD names none
