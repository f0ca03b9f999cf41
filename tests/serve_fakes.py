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


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def running_server(chain: Any, **config: Any) -> Iterator[str]:
    """Serve ``chain`` with uvicorn in a thread on a free loopback port; yields the base URL (``http://host:port``)."""
    import uvicorn

    from elmd_sdk.serve import ServeConfig, create_app

    settings = ServeConfig(**{"port": free_port(), **config})
    server = uvicorn.Server(uvicorn.Config(create_app(chain, settings), host="127.0.0.1", port=settings.port,
                                           log_level="warning", timeout_graceful_shutdown=5))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{settings.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
