"""Test helpers for the server: a closed-set chain over a tiny random LLM and a uvicorn server in a thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from chain_fakes import FixedRetriever, tiny_chat


def tiny_chain(**chain: Any) -> Any:
    """A closed-set ELMD chain over the tiny LLM (gibberish replies that carry an emotion and its scores)."""
    from elmd_sdk.chains.chain import ELMDChain

    return ELMDChain(chat_model=tiny_chat(max_new_tokens=16), retriever=FixedRetriever(), **chain)


def endless_chain() -> Any:
    """A chain whose reply never ends (a piece every 20 ms) until its stream is closed; ``closed`` counts those."""
    from elmd_sdk.answer.result import ELMDResult
    from elmd_sdk.chains.chain import ELMDChain

    class EndlessChain(ELMDChain):
        closed: int = 0

        def stream(self, input: Any, config: Any = None, **kwargs: Any) -> Iterator[ELMDResult]:
            try:
                yield ELMDResult("happy", "", emotion_scores={"happy": 1.0})
                while True:
                    time.sleep(0.02)
                    yield ELMDResult(None, " la")
            finally:
                self.closed += 1

    return EndlessChain(chat_model=tiny_chat(max_new_tokens=16), retriever=FixedRetriever())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_for(chain: Any, **config: Any) -> Any:
    """The server ``elmd-sdk serve`` runs (:func:`~elmd_sdk.serve.server.uvicorn_server`) for ``chain`` on a free
    loopback port, with a 5 s shutdown grace unless ``config`` says otherwise."""
    from elmd_sdk.serve import ServeConfig, create_app
    from elmd_sdk.serve.server import uvicorn_server

    settings = ServeConfig(**{"port": free_port(), "shutdown_timeout_s": 5, **config})
    return uvicorn_server(create_app(chain, settings), settings, log_level="warning")


@contextlib.contextmanager
def running(server: Any) -> Iterator[str]:
    """Run ``server`` (:func:`server_for`) in a thread until the block ends; yields its URL (``http://host:port``)."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextlib.contextmanager
def running_server(chain: Any, **config: Any) -> Iterator[str]:
    """Serve ``chain`` in a thread (:func:`server_for`, :func:`running`); yields the base URL."""
    with running(server_for(chain, **config)) as url:
        yield url
