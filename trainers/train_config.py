"""The engine settings every training stage (ERM, REP, EERG) takes, and the Accelerator built from them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from elmd_sdk.errors import InputError
from elmd_sdk.trainers.metrics_log import tracker_names
from elmd_sdk.trainers.schedule import LR_SCHEDULES

MIXED_PRECISION = ("no", "fp16", "bf16")
KEEP = ("last", "best")
# The training loop runs data-parallel (DDP). These shard the optimizer or the weights, which the checkpoint format
# (plain AdamW state, trainable tensors by name) does not describe.
SHARDING_ENGINES = ("DEEPSPEED", "FSDP", "MEGATRON_LM")


@dataclass
class TrainConfig:
    """Engine settings of a training run (defaults: REP and EERG's; the paper fixes batch 16 and AdamW, the rest are
    HF defaults; ERM starts from :func:`~elmd_sdk.trainers.erm.erm_train_defaults`)."""

    epochs: int = 1  # passes over the training samples (the paper does not state it)
    batch_size: int = 16  # global batch per optimizer step = micro batch x processes x grad_accum (paper 4.3)
    grad_accum: int = 1  # micro-steps per optimizer step
    # "no", "fp16" or "bf16"; None = accelerate's env (accelerate launch), else bf16 on a CPU with native bf16
    # (AVX512-BF16/AMX: 1.7x faster steps here, benchmarks/train_speed.py), else "no"
    mixed_precision: str | None = None
    gradient_checkpointing: bool = False  # recompute the frozen LLM's activations in backward to save memory
    seed: int = 0  # initialisation, batch order and dropout
    max_steps: int | None = None  # stop after this many optimizer steps in all (resume to continue)
    checkpoint_every: int = 100  # optimizer steps between checkpoints (one is also written at each epoch end)
    max_grad_norm: float | None = 1.0  # gradient clipping (transformers Trainer default); None or 0 turns it off
    weight_decay: float = 0.0  # AdamW weight decay (transformers Trainer default, as ChatGLM2's p-tuning recipe)
    lr_schedule: str = "linear"  # "linear" decay to 0 over the run (Trainer default) or "constant"
    progress: bool | None = None  # rich progress bar; None = only on a terminal
    group_by_length: bool = True  # batches of similar prompt length (transformers' length grouping): little padding
    logging_steps: int = 10  # optimizer steps per metrics.jsonl training line (mean loss of the interval)
    eval_every: int | None = None  # also validate every N optimizer steps (validation always runs at epoch ends)
    keep: str = "last"  # the weights the bundle gets: "last", or "best" (highest calibrated validation macro-F1)
    report_to: tuple[str, ...] = ()  # Accelerate trackers, e.g. ("tensorboard",), logging beside metrics.jsonl

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first impossible setting."""
        for name, low in (
            ("epochs", 1), ("batch_size", 1), ("grad_accum", 1), ("checkpoint_every", 1), ("logging_steps", 1)
        ):  # fmt: skip
            if getattr(self, name) < low:
                raise InputError(f"must be at least {low}, got {getattr(self, name)}", field=name)
        if self.eval_every is not None and self.eval_every < 1:
            raise InputError(f"must be at least 1, got {self.eval_every}", field="eval_every")
        if self.keep not in KEEP:
            raise InputError(f"must be one of {', '.join(KEEP)}, got {self.keep!r}", field="keep")
        tracker_names(self.report_to)  # an unknown tracker or a missing package fails before any training
        if self.max_steps is not None and self.max_steps < 0:
            raise InputError("must not be negative", field="max_steps")
        if self.mixed_precision is not None and self.mixed_precision not in MIXED_PRECISION:
            raise InputError(f"must be one of {', '.join(MIXED_PRECISION)}", field="mixed_precision")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"must be one of {', '.join(LR_SCHEDULES)}", field="lr_schedule")
        if self.max_grad_norm is not None and self.max_grad_norm < 0:
            raise InputError("must not be negative", field="max_grad_norm")
        if self.weight_decay < 0:
            raise InputError("must not be negative", field="weight_decay")


def default_mixed_precision() -> str | None:
    """``None`` (Accelerate decides) when ``accelerate launch`` set a precision or a GPU is present, else "bf16" on a
    CPU with native bf16 arithmetic (oneDNN: AVX512-BF16 or AMX), else "no"."""
    if os.environ.get("ACCELERATE_MIXED_PRECISION") or torch.cuda.is_available():
        return None
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"


def make_accelerator(config: TrainConfig) -> Any:
    """The Accelerator for ``config`` (devices and processes come from ``accelerate launch`` / torchrun, if used)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs

    # Accelerate keeps one precision per process; each run sets its own (ERM in float32, then REP in bf16, ...).
    # Only the run settings are forgotten: the processes and their process group stay.
    AcceleratorState._reset_state()
    precision = config.mixed_precision if config.mixed_precision is not None else default_mixed_precision()
    accelerator = Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=config.grad_accum,
        # Parameters a step leaves out of the graph (the projector for rows without a clip, the pooler of a
        # sentence encoder that pools the mean): DDP must not wait for their gradients.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    kind = accelerator.distributed_type.value
    if kind in SHARDING_ENGINES:
        raise InputError(
            f"{kind} is not supported: training runs data-parallel (accelerate config: multi-GPU or several "
            "machines, without DeepSpeed or FSDP); the trained parts are small and the frozen LLM fits each device "
            "(README: On several GPUs, machines or processes)",
            field="distributed_type",
        )
    return accelerator
