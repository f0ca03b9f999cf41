"""OpenAI chat-completions request and response shapes, with ELMD's additions (the emotion as data).

Fields of the OpenAI API this server does not implement (``logit_bias``, ``presence_penalty``, ``user``, ...) are
accepted and ignored, as clients send some of them by default; ``n`` above 1 and tool calls are refused.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from elmd_sdk.answer.result import ELMDResult


class TextPart(BaseModel):
    """A text part of a message's content list."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class Message(BaseModel):
    """One chat message; roles are checked when the conversation is mapped (to name the bad message)."""

    model_config = ConfigDict(extra="ignore")
    role: str
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class Video(BaseModel):
    """A video for this turn: a path under the server's ``--video-root``, or an upload (base64)."""

    model_config = ConfigDict(extra="forbid")
    path: str | None = None
    data: str | None = Field(default=None, description="The file's bytes, base64-encoded.")
    filename: str | None = Field(default=None, description="The upload's file name (its suffix names the format).")
    start: float | None = Field(default=None, ge=0)
    end: float | None = Field(default=None, ge=0)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``: OpenAI's request plus ``emotion``, ``allowed_emotions``, ``background``,
    ``video`` and ``retrieval``."""

    model_config = ConfigDict(extra="ignore")
    model: str
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: Literal[1] = 1
    tools: None = Field(default=None, description="Not supported: this model does not call tools.")
    emotion: str | None = Field(default=None, description="Force the reply's emotion (one of the model's labels).")
    allowed_emotions: list[str] | None = Field(default=None, description="Choose the emotion among these labels.")
    background: str | None = Field(default=None, description="The dialogue's background B (default: system text).")
    video: Video | None = None
    retrieval: bool = Field(default=True, description="Retrieve a demonstration with the ERM (the paper's R).")


def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(counts: dict[str, int] | None) -> dict[str, int]:
    """OpenAI's usage object from the chain's token counts."""
    counts = counts or {}
    prompt, completion = counts.get("input_tokens", 0), counts.get("output_tokens", 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def completion(result: ELMDResult, *, model: str, id: str) -> dict[str, Any]:
    """The ``chat.completion`` object of a whole reply; the message carries ``emotion`` and ``emotion_scores``."""
    message = {
        "role": "assistant",
        "content": result.response,
        "emotion": result.emotion,
        "emotion_scores": result.emotion_scores,
    }
    return {
        "id": id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {"index": 0, "message": message, "finish_reason": result.finish_reason or "stop", "logprobs": None}
        ],
        "usage": usage(result.usage),
    }


def chunk(
    delta: dict[str, Any] | None,
    *,
    model: str,
    id: str,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """One ``chat.completion.chunk``; a usage-only chunk (``delta`` None) has no choices, as OpenAI sends it."""
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
    body: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
    }
    if usage is not None:
        body["usage"] = usage
    return body


def error_body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
