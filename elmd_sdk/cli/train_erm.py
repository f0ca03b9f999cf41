"""``elmd-sdk train erm``: train the Emotional Retrieval Module (Eq. 4) on a JSONL corpus.

Every default is read from :class:`~elmd_sdk.trainers.erm.ERMTrainConfig`, its engine settings
(:func:`~elmd_sdk.trainers.erm.erm_train_defaults`) and :class:`~elmd_sdk.retrievers.encoder.ERMConfig`
(``tests/test_paper_hyperparameters.py`` pins the paper's values). Under ``accelerate launch`` (several GPUs or
processes) ``--batch-size`` stays the global batch, contrasted as a whole.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from elmd_sdk.cli.output import Overwrite
from elmd_sdk.cli.train_options import CheckpointEvery, MaxSteps, Resume, Seed, check_run_output
from elmd_sdk.retrievers.encoder import CONFIG_FILE, ERMConfig
from elmd_sdk.trainers.erm import ERMTrainConfig, erm_train_defaults, train_erm

ENGINE = erm_train_defaults()


def command(
    data: Annotated[Path, typer.Option("--data", help="Training samples (native JSONL).")],
    out: Annotated[Path, typer.Option("--out", help="ERM directory to write (safetensors + JSON).")],
    valid: Annotated[
        Path | None, typer.Option("--valid", help="Validation JSONL: emotion match@1 after each epoch.")
    ] = None,
    epochs: Annotated[int, typer.Option(help="Passes over the training utterances.")] = ENGINE.epochs,
    batch_size: Annotated[
        int, typer.Option(help="Utterances per step (batch_size // 2 same-emotion pairs).")
    ] = ENGINE.batch_size,
    lr: Annotated[float, typer.Option(help="AdamW learning rate.")] = ERMTrainConfig.lr,
    lr_schedule: Annotated[
        str, typer.Option(help="linear (decay to 0 over all epochs) or constant.")
    ] = ENGINE.lr_schedule,
    s: Annotated[int, typer.Option("--s", help="Self-separation coefficient (vectors per E_s).")] = ERMConfig.s,
    tau: Annotated[float, typer.Option(help="Temperature of Eq. 2 and Eq. 3.")] = ERMConfig.tau,
    lambda_: Annotated[
        float, typer.Option("--lambda", help="Weight of the emotion loss in Eq. 4.")
    ] = ERMConfig.lambda_,
    no_ert: Annotated[
        bool, typer.Option("--no-ert", help="Ablation: train without ERT (Eq. 2).")
    ] = not ERMConfig.use_ert,
    no_ssc: Annotated[
        bool, typer.Option("--no-ssc", help="Ablation: no self-separated component.")
    ] = not ERMConfig.use_ssc,
    freeze_encoder: Annotated[
        bool, typer.Option("--freeze-encoder", help="Keep the base encoder fixed; train only the SSC.")
    ] = ERMConfig.freeze_encoder,
    lora_rank: Annotated[
        int,
        typer.Option(
            "--lora-rank", min=0, help="Fine-tune the base encoder through LoRA adapters of this rank (0: all weights)."
        ),
    ] = ERMConfig.lora_rank,
    base_model: Annotated[
        str, typer.Option(help="sentence-transformers name or path; 'default' = bundled all-MiniLM-L6-v2.")
    ] = ERMConfig.base_model,
    seed: Seed = ENGINE.seed,
    max_steps: MaxSteps = ENGINE.max_steps,
    checkpoint_every: CheckpointEvery = ENGINE.checkpoint_every,
    device: Annotated[str | None, typer.Option(help="torch device (default: automatic).")] = ERMTrainConfig.device,
    logging_steps: Annotated[
        int, typer.Option(help="Optimizer steps per OUT/metrics.jsonl line (mean loss of the interval).")
    ] = ENGINE.logging_steps,
    eval_every: Annotated[
        int | None, typer.Option(help="Also validate every N optimizer steps (default: at epoch ends only).")
    ] = ENGINE.eval_every,
    report_to: Annotated[
        list[str],
        typer.Option(help="Accelerate trackers (tensorboard, wandb, ..., all), repeatable or comma-separated."),
    ] = ENGINE.report_to,  # type: ignore[assignment]  # typer hands a list; the default stays the tuple
    resume: Resume = False,
    overwrite: Overwrite = False,
) -> None:
    """Train the ERM retriever encoder: ERT (Eq. 2) + SSC (Eq. 3) jointly (Eq. 4), with checkpoints."""
    from elmd_sdk.cli.interrupt import report_checkpoint_on_interrupt
    from elmd_sdk.data import read_jsonl
    from elmd_sdk.sharding import is_main_process
    from elmd_sdk.trainers.checkpoint import checkpoint_dir
    from elmd_sdk.trainers.curves import write_curves
    from elmd_sdk.trainers.metrics_log import split_report_to

    engine = replace(
        ENGINE,
        epochs=epochs,
        batch_size=batch_size,
        lr_schedule=lr_schedule,
        seed=seed,
        max_steps=max_steps,
        checkpoint_every=checkpoint_every,
        logging_steps=logging_steps,
        eval_every=eval_every,
        report_to=split_report_to(report_to),
    )
    config = ERMTrainConfig(
        erm=ERMConfig(
            base_model=base_model,
            s=s,
            use_ssc=not no_ssc,
            use_ert=not no_ert,
            freeze_encoder=freeze_encoder,
            lora_rank=lora_rank,
            tau=tau,
            lambda_=lambda_,
        ),
        lr=lr,
        device=device,
        train=engine,
    )
    config.validate()
    check_run_output(out, CONFIG_FILE, overwrite)
    train = read_jsonl(data, require=True)
    valid_samples = read_jsonl(valid, require=True) if valid is not None else None
    with report_checkpoint_on_interrupt(checkpoint_dir(out)):
        result = train_erm(config, train, valid_samples, out, resume=resume)
    if not is_main_process():  # under accelerate launch the main process reports
        return
    for stats in result.history:
        line = f"epoch {stats.epoch}: step {stats.global_step}, loss {stats.train_loss:.4f}"
        if stats.valid_match_micro is not None:
            line += f", valid match@1 micro {stats.valid_match_micro:.4f} macro {stats.valid_match_macro:.4f}"
        typer.echo(line)
    state = "done" if result.completed else "stopped at --max-steps; continue with --resume"
    typer.echo(f"ERM saved to {result.out_dir} ({state})")
    curves = write_curves(out, title=f"train erm: {out.name}")
    if curves is not None:
        typer.echo(f"learning curves: {curves}")
