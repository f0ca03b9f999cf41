"""What one ELMD turn takes: the input schema (:class:`ELMDInput`, its three history forms) and :func:`parse_input`,
which checks an input and normalises it into a :class:`ParsedInput` (an :class:`~elmd_sdk.errors.InputError` names
the bad field); :func:`sample_input` makes the input of a dataset sample."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from elmd_sdk.answer.wording import wording
from elmd_sdk.data.labels import EMOTIONS, check_emotions
from elmd_sdk.data.records import Sample, Turn, VideoRef
from elmd_sdk.errors import InputError
from elmd_sdk.text_checks import check_text


class HistoryMessage(BaseModel):
    """An earlier turn in the OpenAI chat format."""

    role: Literal["user", "assistant"] = Field(description="user (the other person) or assistant (this bot).")
    content: str = Field(description="What was said.")


class HistoryTurn(BaseModel):
    """One earlier turn of the dialogue."""

    speaker: str = Field(description="Who said it.")
    text: str = Field(description="What was said.")
    emotion: str | None = Field(default=None, description="Its emotion label, if known (not used in the prompt).")


class ELMDInput(BaseModel):
    """What one ELMD turn takes (the chain also accepts a bare string as the utterance)."""

    utterance: str = Field(description="What the other person just said (u).")
    history: list[str | HistoryTurn | HistoryMessage] = Field(
        default_factory=list,
        description="Earlier turns, oldest first: strings (alternating, the last one being the assistant's), "
        "{speaker, text} objects or OpenAI-style {role, content} messages.",
    )
    background: str | None = Field(default=None, description="Background of the dialogue (B), e.g. a scene summary.")
    video: str | None = Field(
        default=None, description="Path of a video clip of the speaker (used when the bundle has a trained projector)."
    )
    speaker: str | None = Field(default=None, description="Name of the utterance's speaker (default: User).")
    emotion: str | None = Field(default=None, description="Force the response emotion (one of the bundle's labels).")
    allowed_emotions: list[str] | None = Field(
        default=None, description="Choose the response emotion only among these labels."
    )


class ParsedInput(BaseModel):
    """A checked input: everything the prompt needs for one turn."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    utterance: Turn
    history: list[Turn]
    background: str | None
    video: VideoRef | None
    emotion: str | None = None
    allowed_emotions: tuple[str, ...] | None = None


def parse_input(
    value: Mapping[str, Any] | str | ELMDInput, language: str = "en", labels: Sequence[str] = EMOTIONS
) -> ParsedInput:
    """Check and normalise one chain input; :class:`InputError` names the bad field (``emotion`` and
    ``allowed_emotions`` must be among ``labels``)."""
    words = wording(language)
    if isinstance(value, ELMDInput):
        value = value.model_dump()
    if isinstance(value, str):
        value = {"utterance": value}
    if not isinstance(value, Mapping):
        raise InputError(f"expected a dict with 'utterance' (or a string), got {type(value).__name__}", field="input")
    unknown = sorted(set(value) - set(ELMDInput.model_fields))
    if unknown:
        raise InputError(f"unknown key (known: {', '.join(ELMDInput.model_fields)})", field=unknown[0])
    text = value.get("utterance")
    if not isinstance(text, str) or not text.strip():
        raise InputError("must be a non-empty string", field="utterance")
    check_text(text, "utterance")
    speaker = value.get("speaker") or words.user_name
    if not isinstance(speaker, str):
        raise InputError("must be a string", field="speaker")
    check_text(speaker, "speaker")
    background = value.get("background")
    if background is not None and not isinstance(background, str):
        raise InputError("must be a string or None", field="background")
    if background is not None:
        check_text(background, "background")
    raw_history = value.get("history") or []
    if isinstance(raw_history, str) or not isinstance(raw_history, Sequence):
        raise InputError("must be a list of strings or {speaker, text} objects", field="history")
    history = [
        _history_turn(item, i, len(raw_history), speaker, words.assistant_name) for i, item in enumerate(raw_history)
    ]
    emotion, allowed = value.get("emotion"), value.get("allowed_emotions")
    check_emotions(labels, emotion, allowed)
    return ParsedInput(
        utterance=Turn(speaker=speaker, text=text.strip()),
        history=history,
        background=background.strip() if background and background.strip() else None,
        video=_video_ref(value.get("video")),
        emotion=emotion,
        allowed_emotions=None if allowed is None else tuple(allowed),
    )


def _history_turn(item: Any, index: int, count: int, user: str, assistant: str) -> Turn:
    """One history entry as a Turn; bare strings alternate speakers, the newest being the assistant's."""
    field = f"history[{index}]"
    if isinstance(item, Turn | HistoryTurn):
        item = {"speaker": item.speaker, "text": item.text, "emotion": item.emotion}
    if isinstance(item, str):
        return Turn(speaker=assistant if (count - 1 - index) % 2 == 0 else user, text=check_text(item, field))
    if isinstance(item, HistoryMessage):
        item = item.model_dump()
    if isinstance(item, Mapping) and "role" in item:
        role, content = item.get("role"), item.get("content")
        if role not in ("user", "assistant"):
            raise InputError(f"role must be 'user' or 'assistant', got {role!r}", field=field)
        if not isinstance(content, str):
            raise InputError("needs a string 'content'", field=field)
        return Turn(speaker=user if role == "user" else assistant, text=check_text(content, f"{field}.content"))
    if isinstance(item, Mapping):
        speaker, text = item.get("speaker"), item.get("text")
        if not isinstance(text, str):
            raise InputError("needs a string 'text'", field=field)
        if not isinstance(speaker, str) or not speaker:
            raise InputError("needs a non-empty string 'speaker'", field=field)
        emotion = item.get("emotion")
        return Turn(
            speaker=check_text(speaker, f"{field}.speaker"),
            text=check_text(text, f"{field}.text"),
            emotion=emotion if isinstance(emotion, str) else None,
        )
    raise InputError(
        f"must be a string, a {{speaker, text}} or a {{role, content}} object, got {type(item).__name__}", field=field
    )


def _video_ref(value: Any) -> VideoRef | None:
    """A video given as a path, a VideoRef or ``{"path", "start", "end"}``: an existing file or folder of frames and
    a forward, non-negative time range, checked whether or not the bundle can use a clip."""
    if value is None or value == "":
        return None
    if isinstance(value, VideoRef):
        video = value
    elif isinstance(value, str | PathLike):
        video = VideoRef(path=str(value))
    elif isinstance(value, Mapping) and isinstance(value.get("path"), str | PathLike):
        start, end = value.get("start"), value.get("end")
        for name, bound in (("start", start), ("end", end)):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int | float)):
                raise InputError("must be a number of seconds or None", field=f"video.{name}")
        video = VideoRef(path=str(value["path"]), start=start, end=end)
    else:
        raise InputError("must be a path, a VideoRef or {path, start, end}", field="video")
    if not Path(video.path).expanduser().exists():
        raise InputError("file not found", file=video.path, field="video")
    for name, bound in (("start", video.start), ("end", video.end)):
        if bound is not None and not 0 <= bound < float("inf"):
            raise InputError(f"must be a finite, non-negative number of seconds, got {bound}", field=f"video.{name}")
    if video.start is not None and video.end is not None and video.end <= video.start:
        raise InputError(f"end {video.end} s must come after start {video.start} s", field="video.end")
    return video


def merge_inputs(inputs: Iterator[Any]) -> Any:
    """One input from a stream of input chunks (added when they support it, else the last one wins)."""
    merged: Any = None
    for item in inputs:
        if merged is None:
            merged = item
            continue
        try:
            merged = merged + item
        except TypeError:
            merged = item
    if merged is None:
        raise InputError("no input given", field="input")
    return merged


def sample_input(sample: Sample) -> dict[str, Any]:
    """The chain input for one sample: u with its speaker, the history as {speaker, text}, B and the video."""
    video = sample.video
    return {
        "utterance": sample.utterance.text,
        "speaker": sample.utterance.speaker,
        "history": [{"speaker": turn.speaker, "text": turn.text} for turn in sample.history],
        "background": sample.background,
        "video": {"path": video.path, "start": video.start, "end": video.end} if video is not None else None,
    }
