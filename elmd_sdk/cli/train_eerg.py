"""``elmd-sdk train eerg``: Emotion-Enhanced Response Generation (Eq. 11), p-tuning v2 prefix plus projector."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from elmd_sdk.cli.train_options import Labels, SharedOptions, label_tuple, stage_command
from elmd_sdk.models.prefix import DEFAULT_PRE_SEQ_LEN
from elmd_sdk.trainers.eerg import EergConfig, train_eerg


@stage_command
def command(
    from_bundle: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="REP bundle to continue (LLM, encoder, projector, index). Omit for the 'w/o REP' ablation: a "
            "fresh projector; then --index or --no-retrieval, and --llm, --visual-encoder, --language, --labels "
            "as in train rep.",
        ),
    ] = None,
    index: Annotated[
        Path | None, typer.Option("--index", help="Demonstration index (default: the REP bundle's).")
    ] = None,
    no_retrieval: Annotated[
        bool, typer.Option("--no-retrieval", help="Train without demonstrations (the 'w/o ERM' ablation).")
    ] = not EergConfig.use_retrieval,
    llm: Annotated[
        str | None,
        typer.Option("--llm", help="LLM name or path (default: the REP bundle's, which it must match; else SmolLM2)."),
    ] = None,
    language: Annotated[
        str | None, typer.Option(help="Prompt wording, en or zh (default: the REP bundle's, else en).")
    ] = None,
    labels: Labels = None,
    pre_seq_len: Annotated[
        int | None, typer.Option(help=f"Prefix length (default {DEFAULT_PRE_SEQ_LEN}, or that of --prefix-init).")
    ] = EergConfig.pre_seq_len,
    prefix_projection: Annotated[
        bool, typer.Option("--prefix-projection", help="Reparameterise the prefix through ChatGLM2's MLP.")
    ] = EergConfig.prefix_projection,
    prefix_init: Annotated[
        Path | None,
        typer.Option("--prefix-init", help="Starting prefix: our prefix folder or a ChatGLM2 p-tuning checkpoint."),
    ] = None,
    prefix_start: Annotated[
        str,
        typer.Option(
            "--prefix-start",
            help="New prefix: text (the LLM's keys/values of the prompt's opening tokens) or random (ChatGLM2's).",
        ),
    ] = EergConfig.prefix_start,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = EergConfig.lr,
    lr_prefix: Annotated[
        float | None, typer.Option("--lr-prefix", help="Learning rate of the prefix.")
    ] = EergConfig.lr_prefix,
    lr_projector: Annotated[
        float | None, typer.Option("--lr-projector", help="Learning rate of the projector.")
    ] = EergConfig.lr_projector,
    *,
    shared: SharedOptions,
) -> None:
    """Train a p-tuning v2 prefix and the REP projector (or, without --from, a fresh one) on emotion + response
    (Eq. 11); write a bundle.

    Multi-GPU: accelerate launch --multi_gpu --num_processes 4 -m elmd_sdk.cli.main train eerg ... (or torchrun);
    --batch-size stays the global batch.
    """
    config = EergConfig(
        from_bundle=str(from_bundle) if from_bundle is not None else None,
        index=str(index) if index is not None else None,
        use_retrieval=not no_retrieval,
        llm=llm,
        language=language,
        labels=label_tuple(labels),
        visual_encoder=shared.visual_encoder,
        frames=shared.frames,
        feature_cache=shared.feature_cache_dir,
        use_video=not shared.no_video,
        max_length=shared.max_length,
        max_prompt_tokens=shared.max_prompt_tokens,
        pre_seq_len=pre_seq_len,
        prefix_projection=prefix_projection,
        prefix_init=str(prefix_init) if prefix_init is not None else None,
        prefix_start=prefix_start,
        lr=lr,
        lr_prefix=lr_prefix,
        lr_projector=lr_projector,
        train=shared.train_config(),
        trust_remote_code=shared.trust_remote_code,
    )
    shared.run("EERG", train_eerg, config)
