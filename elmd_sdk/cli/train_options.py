"""Command-line options ``train rep`` and ``train eerg`` share (data, engine, video), declared once.

:func:`stage_command` gives a command, declared with only its own options and a ``shared: SharedOptions``
argument, the shared ones as well; :meth:`SharedOptions.run` reads the data, trains and reports. Every default is
read from the training config dataclasses (:class:`~elmd_sdk.trainers.train_config.TrainConfig`, the stage
configs), so the command line and the Python API cannot drift apart; ``tests/test_paper_hyperparameters.py`` pins
the paper's values.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Annotated, Any, get_type_hints

import typer

from elmd_sdk.cli.output import Overwrite
from elmd_sdk.trainers.examples import PromptConfig
from elmd_sdk.trainers.metrics_log import split_report_to
from elmd_sdk.trainers.rep import RepConfig
from elmd_sdk.trainers.stage import StageResult
from elmd_sdk.trainers.train_config import TrainConfig

Data = Annotated[Path, typer.Option("--data", help="Training samples (native JSONL).")]
Valid = Annotated[
    Path | None,
    typer.Option(
        "--valid",
        help="Validation JSONL: loss, emotion accuracy and macro-F1 (calibrated choice, and raw) each epoch; its "
        "prompts' emotion prior goes into the bundle.",
    ),
]
Out = Annotated[Path, typer.Option("--out", help="Bundle folder to write (safetensors + JSON).")]
VisualEncoderName = Annotated[
    str | None, typer.Option("--visual-encoder", help="Visual encoder name or path (default: the offline default).")
]
Epochs = Annotated[int, typer.Option(help="Passes over the training samples.")]
BatchSize = Annotated[int, typer.Option(help="Global batch per optimizer step (micro batch x GPUs x grad-accum).")]
GradAccum = Annotated[int, typer.Option("--grad-accum", help="Micro-steps accumulated per optimizer step.")]
MixedPrecision = Annotated[
    str | None,
    typer.Option(
        "--mixed-precision",
        help="no, fp16 or bf16 (default: accelerate launch's setting; on a CPU with native bf16, bf16; else no).",
    ),
]
GradientCheckpointing = Annotated[
    bool, typer.Option("--gradient-checkpointing", help="Recompute LLM activations in backward to save memory.")
]
Frames = Annotated[int, typer.Option(help="Frames m sampled per clip.")]
Language = Annotated[str, typer.Option(help="Prompt wording: en, or zh (ChatGLM2, as in the paper).")]
Labels = Annotated[
    str | None,
    typer.Option(help="Comma-separated response emotions offered (default: the seven; eerg --from: the REP bundle's)."),
]
FeatureCacheDir = Annotated[
    Path | None, typer.Option("--feature-cache", help="Folder of cached video features (default: elmd-sdk's cache).")
]
NoVideo = Annotated[bool, typer.Option("--no-video", help="Ablation 'w/o V': prompts without the video tokens.")]
MaxLength = Annotated[
    int | None, typer.Option(help="Most positions per example; older history turns are dropped (default: context).")
]
MaxPromptTokens = Annotated[
    int | None,
    typer.Option("--max-prompt-tokens", help="Most prompt tokens per training example; older history turns go first."),
]
GroupByLength = Annotated[
    bool,
    typer.Option("--group-by-length/--no-group-by-length", help="Batch examples of similar length (less padding)."),
]
LoggingSteps = Annotated[int, typer.Option("--logging-steps", help="Optimizer steps per metrics.jsonl line.")]
EvalEvery = Annotated[
    int | None, typer.Option("--eval-every", help="Also validate every N optimizer steps (always at epoch ends).")
]
Keep = Annotated[
    str, typer.Option("--keep", help="Weights the bundle gets: last, or best (highest calibrated validation macro-F1).")
]
ReportTo = Annotated[
    list[str],
    typer.Option("--report-to", help="Accelerate tracker (e.g. tensorboard) beside metrics.jsonl; repeatable."),
]
Seed = Annotated[int, typer.Option(help="Seed of initialisation, batch order and dropout.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint after a kill or --max-steps.")]
MaxSteps = Annotated[int | None, typer.Option(help="Stop after this many optimizer steps (resumable).")]
CheckpointEvery = Annotated[int, typer.Option(help="Optimizer steps between checkpoints.")]
MaxGradNorm = Annotated[float, typer.Option(help="Gradient clipping norm; 0 turns clipping off.")]
LrSchedule = Annotated[str, typer.Option(help="linear (decay to 0) or constant.")]
TrustRemoteCode = Annotated[
    bool, typer.Option("--trust-remote-code", help="Let the LLM checkpoint run its own Python code.")
]


@dataclass
class SharedOptions:
    """The options both stages take, as parsed; ``data``, ``out`` and ``valid`` lead the help, the rest follow."""

    data: Data
    out: Out
    valid: Valid = None
    visual_encoder: VisualEncoderName = None
    epochs: Epochs = TrainConfig.epochs
    batch_size: BatchSize = TrainConfig.batch_size
    grad_accum: GradAccum = TrainConfig.grad_accum
    mixed_precision: MixedPrecision = TrainConfig.mixed_precision
    gradient_checkpointing: GradientCheckpointing = TrainConfig.gradient_checkpointing
    frames: Frames = RepConfig.frames  # EERG continues REP's projector: the same m
    feature_cache: FeatureCacheDir = None
    no_video: NoVideo = not PromptConfig.use_video
    max_length: MaxLength = PromptConfig.max_length
    max_prompt_tokens: MaxPromptTokens = PromptConfig.max_prompt_tokens
    seed: Seed = TrainConfig.seed
    resume: Resume = False
    max_steps: MaxSteps = TrainConfig.max_steps
    checkpoint_every: CheckpointEvery = TrainConfig.checkpoint_every
    max_grad_norm: MaxGradNorm = TrainConfig.max_grad_norm or 0.0
    lr_schedule: LrSchedule = TrainConfig.lr_schedule
    group_by_length: GroupByLength = TrainConfig.group_by_length
    logging_steps: LoggingSteps = TrainConfig.logging_steps
    eval_every: EvalEvery = TrainConfig.eval_every
    keep: Keep = TrainConfig.keep
    report_to: ReportTo = TrainConfig.report_to  # type: ignore[assignment]
    trust_remote_code: TrustRemoteCode = RepConfig.trust_remote_code
    overwrite: Overwrite = False

    @property
    def feature_cache_dir(self) -> str | None:
        """``--feature-cache`` as the stage configs take it."""
        return str(self.feature_cache) if self.feature_cache is not None else None

    def train_config(self) -> TrainConfig:
        """The engine settings (``--max-grad-norm 0`` turns clipping off)."""
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            grad_accum=self.grad_accum,
            mixed_precision=self.mixed_precision,
            gradient_checkpointing=self.gradient_checkpointing,
            seed=self.seed,
            max_steps=self.max_steps,
            checkpoint_every=self.checkpoint_every,
            max_grad_norm=self.max_grad_norm or None,
            lr_schedule=self.lr_schedule,
            group_by_length=self.group_by_length,
            logging_steps=self.logging_steps,
            eval_every=self.eval_every,
            keep=self.keep,
            report_to=split_report_to(self.report_to),
        )

    def run(self, stage: str, train: Callable[..., StageResult], config: Any) -> None:
        """Validate ``config``, train on ``--data`` (``--valid``) into ``--out``; report on the main process and
        draw ``OUT/curves.png`` from ``OUT/metrics.jsonl``."""
        from elmd_sdk.bundle import MANIFEST_FILE, data_sha256
        from elmd_sdk.cli.interrupt import report_checkpoint_on_interrupt
        from elmd_sdk.data import read_jsonl
        from elmd_sdk.sharding import is_main_process
        from elmd_sdk.trainers.checkpoint import checkpoint_dir
        from elmd_sdk.trainers.curves import write_curves

        config.validate()
        check_run_output(self.out, MANIFEST_FILE, self.overwrite)
        samples = read_jsonl(self.data, require=True)
        valid = read_jsonl(self.valid, require=True) if self.valid is not None else []
        with report_checkpoint_on_interrupt(checkpoint_dir(self.out)):
            result = train(config, samples, valid, self.out, resume=self.resume, data_sha256=data_sha256([self.data]))
        if is_main_process():
            for stats in result.history:
                typer.echo(stats.summary())
            if curves := write_curves(self.out, title=f"{stage} {self.out.name}"):
                typer.echo(f"learning curves: {curves}")
            if result.kept.get("keep") == "best":
                typer.echo(
                    f"kept the best weights: step {result.kept['step']}, macro-F1 {result.kept['valid_macro_f1']:.4f}"
                )
            state = "done" if result.completed else "stopped at --max-steps; continue with --resume"
            typer.echo(f"{stage} bundle {'saved to' if result.completed else 'checkpoint in'} {self.out} ({state})")


_LEADING = ("data", "out", "valid")


def check_run_output(out: Path, manifest: str, overwrite: bool) -> None:
    """Before training: ``out`` can be written, and is new, empty, or a folder a run of this stage writes (with its
    ``manifest``, or an unfinished run's checkpoint or metrics log) unless ``--overwrite``
    (:func:`elmd_sdk.io.check_output_folder`)."""
    from elmd_sdk.io import check_output_folder
    from elmd_sdk.trainers.checkpoint import CHECKPOINT_DIR, STATE_JSON
    from elmd_sdk.trainers.metrics_log import METRICS_FILE

    check_output_folder(out, manifest, f"{CHECKPOINT_DIR}/{STATE_JSON}", METRICS_FILE, overwrite=overwrite)


def label_tuple(labels: str | None) -> tuple[str, ...] | None:
    """``--labels a,b,c`` as a tuple (None when not given)."""
    return tuple(x.strip() for x in labels.split(",")) if labels else None


def stage_command(command: Callable[..., None]) -> Callable[..., None]:
    """``command(own options..., shared: SharedOptions)`` as a typer command with the shared options added."""
    hints = get_type_hints(SharedOptions, include_extras=True)
    shared = [
        inspect.Parameter(
            f.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.Parameter.empty if f.default is MISSING else f.default,
            annotation=hints[f.name],
        )
        for f in fields(SharedOptions)
    ]
    own = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
        for p in inspect.signature(command, eval_str=True).parameters.values()
        if p.name != "shared"
    ]
    leading = [p for p in shared if p.name in _LEADING]
    params = [*leading, *own, *(p for p in shared if p.name not in _LEADING)]

    @functools.wraps(command)
    def wrapper(**kwargs: Any) -> None:
        options = SharedOptions(**{p.name: kwargs.pop(p.name) for p in shared})
        command(**kwargs, shared=options)

    wrapper.__signature__ = inspect.Signature(params, return_annotation=None)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper
