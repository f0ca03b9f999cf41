"""``elmd-sdk train rep``: Response Emotion Prediction (Eq. 10), training the video projector into a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from elmd_sdk.cli.train_options import Labels, Language, SharedOptions, label_tuple, stage_command
from elmd_sdk.trainers.examples import PromptConfig
from elmd_sdk.trainers.rep import RepConfig, train_rep


@stage_command
def command(
    index: Annotated[
        Path | None, typer.Option("--index", help="Demonstration index (part R); omit for the 'w/o ERM' ablation.")
    ] = None,
    llm: Annotated[str | None, typer.Option("--llm", help="LLM name or path (default: embedded SmolLM2).")] = None,
    language: Language = PromptConfig.language,
    labels: Labels = None,
    lr: Annotated[float, typer.Option(help="AdamW learning rate of the projector.")] = RepConfig.lr,
    *,
    shared: SharedOptions,
) -> None:
    """Train the projector with frozen LLM and encoder on the response emotion (Eq. 10); write a bundle.

    Multi-GPU: accelerate launch --multi_gpu --num_processes 4 -m elmd_sdk.cli.main train rep ... (or torchrun);
    --batch-size stays the global batch.
    """
    config = RepConfig(
        index=str(index) if index is not None else None,
        llm=llm,
        visual_encoder=shared.visual_encoder,
        frames=shared.frames,
        feature_cache=shared.feature_cache_dir,
        prompt=PromptConfig(
            language=language,
            labels=label_tuple(labels) or PromptConfig.labels,
            use_video=not shared.no_video,
            max_length=shared.max_length,
            max_prompt_tokens=shared.max_prompt_tokens,
        ),
        train=shared.train_config(),
        lr=lr,
        trust_remote_code=shared.trust_remote_code,
    )
    shared.run("REP", train_rep, config)
