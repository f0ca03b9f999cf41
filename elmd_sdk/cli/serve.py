"""``elmd-sdk serve``: a bundle as an OpenAI-compatible HTTP server with a web chat page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from elmd_sdk.cli import generation_options, precision_options
from elmd_sdk.serve.config import ServeConfig

_DEFAULTS = ServeConfig()


def command(
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="Bundle folder (bundle.json ...); default: the embedded one.")
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on (loopback by default).")] = _DEFAULTS.host,
    port: Annotated[int, typer.Option("--port", min=0, max=65535)] = _DEFAULTS.port,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="ELMD_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1 requests."),
    ] = None,
    max_concurrency: Annotated[
        int, typer.Option("--max-concurrency", min=1, help="Requests inside at once; one more gets 429.")
    ] = _DEFAULTS.max_concurrency,
    max_batch: Annotated[
        int, typer.Option("--max-batch", min=1, help="Replies decoded together per forward pass.")
    ] = _DEFAULTS.max_batch,
    video_root: Annotated[
        Path | None, typer.Option("--video-root", help="Folder that video paths in requests must lie under.")
    ] = None,
    max_video_mb: Annotated[
        float, typer.Option("--max-video-mb", min=0, help="Largest video upload, in MiB.")
    ] = _DEFAULTS.max_video_bytes / 2**20,
    request_timeout: Annotated[
        int, typer.Option("--request-timeout", min=1, help="Seconds a request may take; then 504 and decoding stops.")
    ] = _DEFAULTS.request_timeout_s,
    read_timeout: Annotated[
        int, typer.Option("--read-timeout", min=1, help="Seconds to wait for a request's headers or body.")
    ] = _DEFAULTS.read_timeout_s,
    max_new_tokens: generation_options.MaxNewTokens = None,
    seed: generation_options.Seed = None,
    sample: generation_options.Sample = None,
    temperature: generation_options.Temperature = None,
    top_p: generation_options.TopP = None,
    dtype: precision_options.Dtype = None,
    quantize: precision_options.Quantize = None,
) -> None:
    """Serve a bundle over HTTP: OpenAI's /v1/chat/completions (with the reply's emotion), /v1/models, /health
    and a web chat page at /. Stops cleanly on Ctrl-C or SIGTERM. The decoding options set the server's defaults; a
    request's own fields (max_tokens, temperature, top_p, seed) win over them."""
    from elmd_sdk.serve.server import model_id, serve

    config = ServeConfig(
        model_id=model_id(bundle),
        host=host,
        port=port,
        api_key=api_key,
        max_concurrency=max_concurrency,
        max_batch=max_batch,
        video_root=video_root,
        max_video_bytes=int(max_video_mb * 2**20),
        request_timeout_s=request_timeout,
        read_timeout_s=read_timeout,
    )
    generation = generation_options.generation_overrides(
        max_new_tokens=max_new_tokens, seed=seed, sample=sample, temperature=temperature, top_p=top_p
    )
    serve(bundle, config, generation, dtype=dtype, quantize=quantize)
