"""Run the app with uvicorn: load the bundle once, listen, and shut down cleanly on SIGTERM or Ctrl-C."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

import uvicorn

from elmd_sdk.serve.config import ServeConfig


def model_id(bundle: Path | None) -> str:
    """The model name a bundle is served under: its folder's name; ``default`` for the embedded bundle."""
    return "default" if bundle is None else bundle.resolve().name


def serve(bundle: Path | None, config: ServeConfig) -> None:
    """Serve ``bundle`` (None: the embedded default) until SIGTERM/SIGINT; in-flight requests get
    ``config.shutdown_timeout_s`` to finish, then are cancelled (their decoding stops); returns normally (exit 0)."""
    from transformers.utils import logging as hf_logging

    from elmd_sdk.chains.chain import ELMDChain
    from elmd_sdk.paths import default_bundle_path
    from elmd_sdk.serve.app import create_app

    if config.video_root is not None and not config.video_root.is_dir():
        from elmd_sdk.errors import InputError

        raise InputError("not a folder", file=config.video_root, field="--video-root")
    hf_logging.disable_progress_bar()
    print(f"loading {bundle or 'the embedded default bundle'} ...", file=sys.stderr)
    chain = ELMDChain.from_bundle(bundle if bundle is not None else default_bundle_path())
    app = create_app(chain, config)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the handler it found: make that
    # one a no-op, so a stopped server exits 0 (Ctrl-C still ends as an interrupt).
    signal.signal(signal.SIGTERM, lambda _signum, _frame: None)
    settings = uvicorn.Config(
        app, host=config.host, port=config.port, timeout_graceful_shutdown=config.shutdown_timeout_s, log_level="info"
    )
    _AnnouncingServer(settings, config.model_id).run()


class _AnnouncingServer(uvicorn.Server):
    """uvicorn's server that prints ``serving MODEL on http://HOST:PORT`` once it listens (with the port it got)."""

    def __init__(self, settings: uvicorn.Config, model: str) -> None:
        super().__init__(settings)
        self.model = model

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"serving {self.model} on http://{host}:{port}", file=sys.stderr, flush=True)
