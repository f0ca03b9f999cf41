"""``elmd-sdk train rep``: Response Emotion Prediction (Eq. 10), training the video projector into a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from elmd_sdk.cli import train_options as opt


def command(
    data: opt.Data,
    out: opt.Out,
    valid: opt.Valid = None,
    index: Annotated[
        Path | None, typer.Option("--index", help="Demonstration index (part R); omit for the 'w/o ERM' ablation.")
    ] = None,
    llm: Annotated[str | None, typer.Option("--llm", help="LLM name or path (default: embedded SmolLM2).")] = None,
    visual_encoder: opt.VisualEncoderName = None,
    language: Annotated[str, typer.Option(help="Prompt wording: en, or zh (ChatGLM2, as in the paper).")] = "en",
    labels: Annotated[
        str | None, typer.Option(help="Comma-separated response emotions offered (default: the seven).")
    ] = None,
    epochs: opt.Epochs = 1,
    batch_size: opt.BatchSize = 16,
    lr: Annotated[float, typer.Option(help="AdamW learning rate of the projector.")] = 2e-5,
    grad_accum: opt.GradAccum = 1,
    mixed_precision: opt.MixedPrecision = None,
    gradient_checkpointing: opt.GradientCheckpointing = False,
    frames: opt.Frames = 8,
    feature_cache: opt.FeatureCacheDir = None,
    no_video: opt.NoVideo = False,
    max_length: opt.MaxLength = None,
    seed: opt.Seed = 0,
    resume: opt.Resume = False,
    max_steps: opt.MaxSteps = None,
    checkpoint_every: opt.CheckpointEvery = 100,
    eval_batch_size: opt.EvalBatchSize = 16,
    max_grad_norm: opt.MaxGradNorm = 1.0,
    lr_schedule: opt.LrSchedule = "linear",
    trust_remote_code: opt.TrustRemoteCode = False,
) -> None:
    """Train the projector with frozen LLM and encoder on the response emotion (Eq. 10); write a bundle.

    Multi-GPU: accelerate launch --multi_gpu --num_processes 4 -m elmd_sdk.cli.main train rep ... (or torchrun);
    --batch-size stays the global batch.
    """
    from accelerate import PartialState

    from elmd_sdk.bundle import data_sha256
    from elmd_sdk.data import EMOTIONS, read_jsonl
    from elmd_sdk.trainers.examples import PromptConfig
    from elmd_sdk.trainers.rep import RepConfig, train_rep
    from elmd_sdk.trainers.stage import TrainConfig

    config = RepConfig(
        index=str(index) if index is not None else None,
        llm=llm,
        visual_encoder=visual_encoder,
        frames=frames,
        feature_cache=str(feature_cache) if feature_cache is not None else None,
        prompt=PromptConfig(
            language=language,
            labels=tuple(x.strip() for x in labels.split(",")) if labels else EMOTIONS,
            use_video=not no_video,
            max_length=max_length,
        ),
        train=TrainConfig(
            epochs=epochs,
            batch_size=batch_size,
            grad_accum=grad_accum,
            mixed_precision=mixed_precision,
            gradient_checkpointing=gradient_checkpointing,
            seed=seed,
            max_steps=max_steps,
            checkpoint_every=checkpoint_every,
            eval_batch_size=eval_batch_size,
            max_grad_norm=max_grad_norm or None,
            lr_schedule=lr_schedule,
        ),
        lr=lr,
        trust_remote_code=trust_remote_code,
    )
    config.validate()
    train = read_jsonl(data)
    valid_samples = read_jsonl(valid) if valid is not None else []
    result = train_rep(config, train, valid_samples, out, resume=resume, data_sha256=data_sha256([data]))
    if PartialState().is_main_process:
        for stats in result.history:
            typer.echo(stats.summary())
        state = "done" if result.completed else "stopped at --max-steps; continue with --resume"
        typer.echo(f"REP bundle {'saved to' if result.completed else 'checkpoint in'} {out} ({state})")
