"""``elmd-sdk chat``: talk to an ELMD bundle in the terminal (the embedded default unless --bundle is given)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from elmd_sdk.cli import generation_options, precision_options


def command(
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="Bundle folder (bundle.json ...); default: the embedded one.")
    ] = None,
    video: Annotated[Path | None, typer.Option("--video", help="Video clip attached to your first turn.")] = None,
    background: Annotated[str | None, typer.Option("--background", help="Background of the dialogue.")] = None,
    max_new_tokens: generation_options.MaxNewTokens = None,
    seed: generation_options.Seed = None,
    sample: generation_options.Sample = None,
    temperature: generation_options.Temperature = None,
    top_p: generation_options.TopP = None,
    dtype: precision_options.Dtype = None,
    quantize: precision_options.Quantize = None,
) -> None:
    """Chat with emotion-aware replies: each reply shows its predicted emotion, then streams its text.

    The prompt comes at once: the bundle loads in the background while you type, and the first reply waits only for
    what is still loading.
    """
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from elmd_sdk.bundle import load_bundle
    from elmd_sdk.cli.chat_repl import ChatREPL, describe
    from elmd_sdk.paths import default_bundle_path

    if video is not None:  # a bad clip stops the command (exit 2) before anything loads
        from elmd_sdk.video.frames import sample_frames

        sample_frames(str(video), m=1)
    generation = generation_options.generation_overrides(
        max_new_tokens=max_new_tokens, seed=seed, sample=sample, temperature=temperature, top_p=top_p
    )
    source = bundle if bundle is not None else default_bundle_path()
    manifest, _ = load_bundle(source)  # a missing or broken bundle stops here, before the prompt
    print(describe(manifest), file=sys.stderr)
    print("/help lists the commands; Ctrl-D quits.", file=sys.stderr)
    loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="elmd-load")
    chain = loader.submit(_load, source, generation, dtype, quantize)
    loader.shutdown(wait=False)
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    ChatREPL(chain, background=background, video=video).run()


def _load(source: Path, generation: dict[str, Any], dtype: str | None, quantize: str | None) -> Any:
    """The chain of ``source``, without third-party loading bars (the status line said what loads)."""
    from transformers.utils import logging as hf_logging

    from elmd_sdk.chains.chain import ELMDChain

    hf_logging.disable_progress_bar()
    return ELMDChain.from_bundle(source, dtype=dtype, quantize=quantize, **generation)
