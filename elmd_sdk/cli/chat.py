"""``elmd-sdk chat``: talk to an ELMD bundle in the terminal (the embedded default unless --bundle is given)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def command(
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="Bundle folder (bundle.json ...); default: the embedded one.")
    ] = None,
    video: Annotated[Path | None, typer.Option("--video", help="Video clip attached to your first turn.")] = None,
    background: Annotated[str | None, typer.Option("--background", help="Background of the dialogue.")] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option("--max-new-tokens", min=1, help="Most tokens per reply (default: the bundle's).")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed for reproducible sampling.")] = None,
) -> None:
    """Chat with emotion-aware replies: each reply shows its predicted emotion, then streams its text."""
    import sys

    from rich.console import Console
    from transformers.utils import logging as hf_logging

    from elmd_sdk.chains.chain import ELMDChain, default_bundle_path
    from elmd_sdk.chains.chat_repl import ChatREPL, describe

    if video is not None:  # a bad clip stops the command (exit 2) before anything loads
        from elmd_sdk.video.frames import sample_frames

        sample_frames(str(video), m=1)
    hf_logging.disable_progress_bar()  # a status line is shown instead of per-file loading bars
    console = Console(stderr=True)
    source = bundle if bundle is not None else default_bundle_path()
    with console.status(f"Loading bundle {source} (the first run also prepares the language model once)..."):
        chain = ELMDChain.from_bundle(source, max_new_tokens=max_new_tokens, seed=seed)
    console.print(describe(chain), highlight=False, soft_wrap=True)
    console.print("/help lists the commands; Ctrl-D quits.", highlight=False, soft_wrap=True)
    if sys.stdin.isatty():
        import readline  # noqa: F401  (line editing and history for input())
    ChatREPL(chain, background=background, video=video).run()
