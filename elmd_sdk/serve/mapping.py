"""An OpenAI chat request as one ELMD turn.

The last message is the utterance u (it must be the user's); the user and assistant messages before it are the
history H; system (and ``developer``) messages become the background B unless the request gives ``background``.
Sampling fields map onto the chat model's call options; a video is a path under ``--video-root`` or an upload, kept
in a temporary file for the request's lifetime.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elmd_sdk.errors import InputError
from elmd_sdk.serve.config import ServeConfig
from elmd_sdk.serve.openai_types import ChatCompletionRequest
from elmd_sdk.text_checks import check_text

SYSTEM_ROLES = frozenset({"system", "developer"})
TURN_ROLES = frozenset({"user", "assistant"})
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg"})


class RequestError(Exception):
    """A request the server refuses: the HTTP status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def check_model(model: Any, config: ServeConfig) -> None:
    """A :class:`RequestError` unless ``model`` names the served model (400 when it is not a name, else 404)."""
    if not isinstance(model, str):
        raise RequestError(400, "model: required, the served model's id (GET /v1/models)", param="model")
    if model != config.model_id:
        raise RequestError(404, f"no model {model!r}; this server has {config.model_id!r}",
                           param="model", code="model_not_found")  # fmt: skip


@dataclass(frozen=True)
class ChainCall:
    """What the chain is called with: its input and the chat model's call options."""

    input: dict[str, Any]
    options: dict[str, Any]


@contextlib.contextmanager
def chain_turn(request: ChatCompletionRequest, config: ServeConfig, *, video_enabled: bool) -> Iterator[ChainCall]:
    """The request as the chain's input; an uploaded video lives in a temporary file until the block ends."""
    _check_texts(request.model_dump(exclude_none=True), "")
    history, utterance, system = _conversation(request, config)
    background = request.background if request.background is not None else ("\n".join(system) or None)
    data: dict[str, Any] = {"utterance": utterance, "history": history, "background": background}
    if request.emotion is not None:
        data["emotion"] = request.emotion
    if request.allowed_emotions is not None:
        data["allowed_emotions"] = request.allowed_emotions
    with _video(request, config, video_enabled) as video:
        if video is not None:
            data["video"] = video
        yield ChainCall(data, _options(request))


def _check_texts(value: Any, field: str) -> None:
    """:func:`check_text` on every string of the request, each named by its path (``messages[0].content``,
    ``messages[1].content[0].text``, ``stop[1]``, ``background``)."""
    if isinstance(value, str):
        check_text(value, field)
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_texts(item, f"{field}.{key}" if field else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_texts(item, f"{field}[{i}]")


def _conversation(request: ChatCompletionRequest, config: ServeConfig) -> tuple[list[dict[str, str]], str, list[str]]:
    """(history as {role, content}, the utterance, the system texts); RequestError naming the bad message."""
    if len(request.messages) > config.max_messages:
        raise RequestError(400, f"at most {config.max_messages} messages per request", param="messages")
    history: list[dict[str, str]] = []
    system: list[str] = []
    for i, message in enumerate(request.messages):
        text = message.text()
        if len(text) > config.max_message_chars:
            raise RequestError(
                400,
                f"message {i} has {len(text)} characters; the limit is {config.max_message_chars}",
                param=f"messages[{i}].content",
                code="string_above_max_length",
            )
        if message.role in SYSTEM_ROLES:
            if text.strip():
                system.append(text.strip())
        elif message.role in TURN_ROLES:
            history.append({"role": message.role, "content": text})
        else:
            raise RequestError(
                400,
                f"unsupported role {message.role!r}: use system, developer, user or assistant",
                param=f"messages[{i}].role",
            )
    if not history or history[-1]["role"] != "user":
        raise RequestError(400, "the last turn must be a user message (the utterance to answer)", param="messages")
    utterance = history.pop()["content"]
    if not utterance.strip():
        raise RequestError(400, "the last user message is empty", param=f"messages[{len(request.messages) - 1}]")
    return history, utterance, system


def _options(request: ChatCompletionRequest) -> dict[str, Any]:
    """The chat model's call options for the request's sampling fields (absent ones keep the bundle's)."""
    options: dict[str, Any] = {}
    if (most := request.max_completion_tokens or request.max_tokens) is not None:
        options["max_new_tokens"] = most
    if request.temperature is not None:
        options["temperature"] = request.temperature
    if request.top_p is not None:
        options["top_p"] = request.top_p
    if request.seed is not None:
        options["seed"] = request.seed
    if request.stop:
        options["stop"] = [request.stop] if isinstance(request.stop, str) else list(request.stop)
    return options


@contextlib.contextmanager
def _video(request: ChatCompletionRequest, config: ServeConfig, enabled: bool) -> Iterator[dict[str, Any] | None]:
    """The video as the chain's ``{path, start, end}``, checked to be a video file the server may read."""
    from elmd_sdk.video.frames import probe_video

    given = request.video
    if given is None:
        yield None
        return
    if not enabled:
        raise RequestError(400, "this model does not take video (its bundle has no video projector)", param="video")
    if (given.path is None) == (given.data is None):
        raise RequestError(400, "give exactly one of 'path' and 'data'", param="video")
    if given.start is not None and given.end is not None and given.end <= given.start:
        raise RequestError(400, f"end {given.end} s must come after start {given.start} s", param="video.end")
    with _video_file(given.path, given.data, given.filename, config) as path:
        try:
            probe_video(path)
        except InputError as error:
            raise RequestError(400, f"not a video: {error.problem}", param="video", code="invalid_video") from None
        yield {"path": str(path), "start": given.start, "end": given.end}


@contextlib.contextmanager
def _video_file(path: str | None, data: str | None, filename: str | None, config: ServeConfig) -> Iterator[Path]:
    if path is not None:
        yield _under_root(path, config.video_root)
        return
    assert data is not None
    suffix = Path(filename or "").suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise RequestError(
            400, f"'filename' must end in one of {', '.join(sorted(VIDEO_SUFFIXES))}", param="video.filename"
        )
    if len(data) > config.max_video_bytes * 4 // 3 + 4:
        raise RequestError(413, f"the video is over {config.max_video_bytes} bytes", param="video.data")
    try:
        content = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(400, "not valid base64", param="video.data") from None
    if len(content) > config.max_video_bytes:
        raise RequestError(413, f"the video is over {config.max_video_bytes} bytes", param="video.data")
    handle, name = tempfile.mkstemp(prefix="elmd-upload-", suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(content)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _under_root(path: str, root: Path | None) -> Path:
    """A video path the server may read: an existing file under ``root`` once resolved (symlinks included)."""
    if root is None:
        raise RequestError(
            403,
            "this server takes no video paths (start it with --video-root DIR), upload the file instead",
            param="video.path",
        )
    try:
        resolved = (root / path).resolve()
        if not resolved.is_relative_to(root.resolve()):
            raise RequestError(403, "the video path leads out of the server's video root", param="video.path")
        if not resolved.is_file():
            raise RequestError(400, "no such video file under the server's video root", param="video.path")
    except (OSError, ValueError) as error:  # a null byte, a name or path too long for the file system, ...
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise RequestError(400, f"not a usable video path: {reason}", param="video.path") from None
    return resolved
