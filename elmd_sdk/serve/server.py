"""Run the app with uvicorn: load the bundle once, listen, and shut down cleanly on SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol, RequestResponseCycle

from elmd_sdk.serve.config import ServeConfig

if TYPE_CHECKING:
    from fastapi import FastAPI


def model_id(bundle: Path | None) -> str:
    """The model name a bundle is served under: its folder's name; ``default`` for the embedded bundle."""
    return "default" if bundle is None else bundle.resolve().name


def serve(
    bundle: Path | None,
    config: ServeConfig,
    generation: Mapping[str, Any] | None = None,
    *,
    dtype: str | None = None,
    quantize: str | None = None,
) -> None:
    """Serve ``bundle`` (None: the embedded default) until SIGTERM/SIGINT; in-flight requests get
    ``config.shutdown_timeout_s`` to finish, then are ended (answered, their decoding stopped); returns normally
    (exit 0). ``generation`` overrides the bundle's decoding settings (a request's own fields win over both);
    ``dtype`` and ``quantize`` the precision its LLM loads with."""
    from transformers.utils import logging as hf_logging

    from elmd_sdk.chains.chain import ELMDChain
    from elmd_sdk.paths import default_bundle_path
    from elmd_sdk.serve.app import create_app

    if config.video_root is not None and not config.video_root.is_dir():
        from elmd_sdk.errors import InputError

        raise InputError("not a folder", file=config.video_root, field="--video-root")
    hf_logging.disable_progress_bar()
    print(f"loading {bundle or 'the embedded default bundle'} ...", file=sys.stderr)
    source = bundle if bundle is not None else default_bundle_path()
    chain = ELMDChain.from_bundle(source, dtype=dtype, quantize=quantize, **(generation or {}))
    app = create_app(chain, config)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the handler it found: make that
    # one a no-op, so a stopped server exits 0 (Ctrl-C still ends as an interrupt).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    uvicorn_server(app, config).run()


_CANCEL_MARGIN_S = 10
"""Seconds between the app ending the requests of a shutdown and uvicorn cancelling them (which answers nothing)."""


def uvicorn_server(app: FastAPI, config: ServeConfig, *, log_level: str = "info") -> uvicorn.Server:
    """uvicorn serving ``app`` (:func:`~elmd_sdk.serve.app.create_app`) on ``config``'s host and port.

    A client must send a request's headers within ``config.read_timeout_s`` of connecting or of the previous reply
    (else the connection is closed: slow-loris clients cannot hold connections). At a shutdown, requests still
    running after ``config.shutdown_timeout_s`` are ended by the app, which answers them (503, or an error event and
    ``data: [DONE]`` in a stream); uvicorn's own cancellation, ``_CANCEL_MARGIN_S`` later, only catches a request
    whose decoding step never returns."""
    settings = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        http=_H11Protocol,
        timeout_keep_alive=config.read_timeout_s,
        timeout_graceful_shutdown=config.shutdown_timeout_s + _CANCEL_MARGIN_S,
        log_level=log_level,
    )
    return _Server(settings, app, config)


class _H11Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, where a request's headers must be in within ``timeout_keep_alive`` seconds of
    the connection opening or of the previous reply, else the connection is closed. uvicorn's keep-alive timer stops
    at the first byte that arrives, so a client sending its headers a byte at a time (a slow loris), or sending the
    rest of a refused body for ever, held its connection."""

    headers_due: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.headers_due is not None:
            self.headers_due.cancel()

    def _await_headers(self) -> None:
        if self.headers_due is not None:
            self.headers_due.cancel()
        self.headers_due = self.loop.call_later(self.timeout_keep_alive, self._close_unless_requested, self.cycle)

    def _close_unless_requested(self, cycle: RequestResponseCycle | None) -> None:
        if self.cycle is cycle:  # no request's headers came in since
            self.transport.close()


class _Server(uvicorn.Server):
    """uvicorn's server that prints ``serving MODEL on http://HOST:PORT`` once it listens (with the port it got), and
    at a shutdown ends the app's requests once the grace period is over."""

    def __init__(self, settings: uvicorn.Config, app: FastAPI, config: ServeConfig) -> None:
        super().__init__(settings)
        self.app, self.serve_config = app, config

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"serving {self.serve_config.model_id} on http://{host}:{port}", file=sys.stderr, flush=True)

    async def shutdown(self, sockets: Any = None) -> None:
        async with anyio.create_task_group() as grace:
            grace.start_soon(self._end_requests_after_grace)
            await super().shutdown(sockets)
            grace.cancel_scope.cancel()

    async def _end_requests_after_grace(self) -> None:
        from elmd_sdk.serve.app import end_requests

        await anyio.sleep(self.serve_config.shutdown_timeout_s)
        end_requests(self.app)
