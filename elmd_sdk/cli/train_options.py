"""Command-line options ``train rep`` and ``train eerg`` share (data, engine, video), declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

Data = Annotated[Path, typer.Option("--data", help="Training samples (native JSONL).")]
Valid = Annotated[
    Path | None, typer.Option("--valid", help="Validation JSONL: loss, emotion accuracy and macro-F1 each epoch.")
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
    typer.Option("--mixed-precision", help="no, fp16 or bf16 (default: accelerate's config, else no)."),
]
GradientCheckpointing = Annotated[
    bool, typer.Option("--gradient-checkpointing", help="Recompute LLM activations in backward to save memory.")
]
Frames = Annotated[int, typer.Option(help="Frames m sampled per clip.")]
FeatureCacheDir = Annotated[
    Path | None, typer.Option("--feature-cache", help="Folder of cached video features (default: elmd-sdk's cache).")
]
NoVideo = Annotated[bool, typer.Option("--no-video", help="Ablation 'w/o V': prompts without the video tokens.")]
MaxLength = Annotated[
    int | None, typer.Option(help="Most positions per example; older history turns are dropped (default: context).")
]
Seed = Annotated[int, typer.Option(help="Seed of initialisation, batch order and dropout.")]
Resume = Annotated[bool, typer.Option("--resume", help="Continue from OUT/checkpoint after a kill.")]
MaxSteps = Annotated[int | None, typer.Option(help="Stop after this many optimizer steps (resumable).")]
CheckpointEvery = Annotated[int, typer.Option(help="Optimizer steps between checkpoints.")]
EvalBatchSize = Annotated[int, typer.Option(help="Rows per validation forward pass.")]
MaxGradNorm = Annotated[float, typer.Option(help="Gradient clipping norm; 0 turns clipping off.")]
LrSchedule = Annotated[str, typer.Option(help="linear (decay to 0) or constant.")]
TrustRemoteCode = Annotated[
    bool, typer.Option("--trust-remote-code", help="Let the LLM checkpoint run its own Python code.")
]
