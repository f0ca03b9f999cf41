"""Settings of ``elmd-sdk serve`` (the CLI's options default to these)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServeConfig:
    """How the OpenAI-compatible server answers; one instance per server."""

    model_id: str = "default"
    """The model name clients send and ``/v1/models`` lists (the bundle folder's name; ``default`` when embedded)."""
    host: str = "127.0.0.1"
    """Interface to listen on: loopback unless you choose otherwise."""
    port: int = 8000
    api_key: str | None = None
    """When set, every ``/v1`` request needs ``Authorization: Bearer <api_key>``."""
    max_concurrency: int = 8
    """Requests in the server at once (decoding or waiting for a place); one more is answered 429."""
    max_batch: int = 8
    """Replies decoded together in one forward pass per step."""
    video_root: Path | None = None
    """Videos named by path must lie under this folder; ``None`` refuses video paths (uploads still work)."""
    max_video_bytes: int = 20 * 2**20
    """Largest uploaded video (base64-decoded)."""
    max_message_chars: int = 16_000
    """Longest text of one message (longer ones are refused, not cut)."""
    max_messages: int = 512
    """Most messages in one request."""
    retry_after_s: int = 1
    """Seconds a 429 answer asks the client to wait."""
    shutdown_timeout_s: int = 30
    """On SIGTERM or Ctrl-C, in-flight requests get this long to finish; then they are ended (a 503, or in a stream an
    error event and ``data: [DONE]``) and their decoding stops."""
    request_timeout_s: int = 300
    """Longest a request may take, reading its body and writing its reply included; past it the decoding stops and
    the client gets 504 (in a stream: an error event and ``data: [DONE]``)."""
    read_timeout_s: int = 15
    """Longest wait for a request's headers (after connecting, or after the previous reply on a kept-alive
    connection: the connection is then closed) and for each piece of its body (408)."""

    @property
    def max_body_bytes(self) -> int:
        """Largest request body: a base64 video of the largest size plus 8 MiB of messages and fields."""
        return self.max_video_bytes * 4 // 3 + 4 + 8 * 2**20
