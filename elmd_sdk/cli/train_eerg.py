"""``elmd-sdk train eerg``: Emotion-Enhanced Response Generation (Eq. 11), p-tuning v2 prefix plus projector."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from elmd_sdk.cli import train_options as opt


def command(
    from_bundle: Annotated[Path, typer.Option("--from", help="REP bundle to continue (LLM, encoder, projector).")],
    data: opt.Data,
    out: opt.Out,
    valid: opt.Valid = None,
    index: Annotated[
        Path | None, typer.Option("--index", help="Demonstration index (default: the REP bundle's).")
    ] = None,
    llm: Annotated[
        str | None, typer.Option("--llm", help="LLM name or path (default: the REP bundle's; must match it).")
    ] = None,
    visual_encoder: opt.VisualEncoderName = None,
    pre_seq_len: Annotated[
        int | None, typer.Option(help="Prefix length (default 128, or that of --prefix-init).")
    ] = None,
    prefix_projection: Annotated[
        bool, typer.Option("--prefix-projection", help="Reparameterise the prefix through ChatGLM2's MLP.")
    ] = False,
    prefix_init: Annotated[
        Path | None,
        typer.Option("--prefix-init", help="Starting prefix: our prefix folder or a ChatGLM2 p-tuning checkpoint."),
    ] = None,
    epochs: opt.Epochs = 1,
    batch_size: opt.BatchSize = 16,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = 2e-2,
    lr_prefix: Annotated[float | None, typer.Option("--lr-prefix", help="Learning rate of the prefix.")] = None,
    lr_projector: Annotated[
        float | None, typer.Option("--lr-projector", help="Learning rate of the projector.")
    ] = None,
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
    """Train a p-tuning v2 prefix and the REP projector on emotion + response (Eq. 11); write a bundle.

    Multi-GPU: accelerate launch --multi_gpu --num_processes 4 -m elmd_sdk.cli.main train eerg ... (or torchrun);
    --batch-size stays the global batch.
    """
    from accelerate import PartialState

    from elmd_sdk.bundle import data_sha256
    from elmd_sdk.data import read_jsonl
    from elmd_sdk.trainers.eerg import EergConfig, train_eerg
    from elmd_sdk.trainers.stage import TrainConfig

    config = EergConfig(
        from_bundle=str(from_bundle),
        index=str(index) if index is not None else None,
        llm=llm,
        visual_encoder=visual_encoder,
        frames=frames,
        feature_cache=str(feature_cache) if feature_cache is not None else None,
        use_video=not no_video,
        max_length=max_length,
        pre_seq_len=pre_seq_len,
        prefix_projection=prefix_projection,
        prefix_init=str(prefix_init) if prefix_init is not None else None,
        lr=lr,
        lr_prefix=lr_prefix,
        lr_projector=lr_projector,
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
        trust_remote_code=trust_remote_code,
    )
    config.validate()
    train = read_jsonl(data)
    valid_samples = read_jsonl(valid) if valid is not None else []
    result = train_eerg(config, train, valid_samples, out, resume=resume, data_sha256=data_sha256([data]))
    if PartialState().is_main_process:
        for stats in result.history:
            typer.echo(stats.summary())
        state = "done" if result.completed else "stopped at --max-steps; continue with --resume"
        typer.echo(f"EERG bundle {'saved to' if result.completed else 'checkpoint in'} {out} ({state})")
