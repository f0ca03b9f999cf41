"""The training loop REP and EERG share, on Hugging Face Accelerate: one CPU, one GPU, or many GPUs and nodes.

``batch_size`` is the GLOBAL batch of one optimizer step. It is split into ``grad_accum`` micro-steps, each split
across the processes, and the loss is the answer-token NLL summed over the whole global batch divided by its token
count, so the update does not depend on how many processes or accumulation steps carry it. Batch order comes from
``(seed, epoch)`` and every step re-seeds from ``(seed, step)`` (dropout of the prefix), so a run resumed from a
checkpoint ends with exactly the weights of an uninterrupted one. Checkpoints (trainable weights, AdamW state,
loss scaler, history) go to ``OUT/checkpoint`` as safetensors + JSON through :mod:`elmd_sdk.trainers.checkpoint`,
which keeps the previous complete checkpoint until the new one is whole, so a run killed at any moment can resume.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from elmd_sdk.data.records import VideoRef
from elmd_sdk.errors import InputError
from elmd_sdk.io import atomic_write_json, read_json
from elmd_sdk.models.closed_set import batch_log_prior
from elmd_sdk.progress import make_progress
from elmd_sdk.trainers.checkpoint import (
    TRAINING_LOG,
    check_resumable,
    check_start,
    checkpoint_dir,
    has_checkpoint,
    resume_checkpoint,
    save_checkpoint,
)
from elmd_sdk.trainers.emotion_eval import ScoredExample, emotion_metrics, score_examples
from elmd_sdk.trainers.examples import Example
from elmd_sdk.trainers.metrics_log import TrainInterval, tracker_names
from elmd_sdk.trainers.schedule import LR_SCHEDULES, lr_factor
from elmd_sdk.trainers.stage_model import StageModel

MIXED_PRECISION = ("no", "fp16", "bf16")
KEEP = ("last", "best")
# Settings a resumed run may change; every other one must equal the checkpoint's.
RESUMABLE_CHANGES = frozenset({"max_steps", "checkpoint_every", "progress", "logging_steps", "report_to"})
BEST = "best."  # checkpoint tensor names of the best-validated weights (with --keep best)


@dataclass
class TrainConfig:
    """Engine settings shared by REP and EERG (the paper fixes batch 16 and AdamW; the rest are HF defaults)."""

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


@dataclass
class ParamGroup:
    """Parameters trained with one learning rate (EERG: the prefix and the projector may differ)."""

    name: str
    params: list[torch.nn.Parameter]
    lr: float


@dataclass
class StageEpochStats:
    """One finished epoch: mean training loss per answer token, and validation loss, accuracy and macro-F1 (of the
    calibrated choice, what inference makes)."""

    epoch: int  # 0: the evaluation of a stage with nothing to train
    global_step: int
    train_loss: float | None
    valid_loss: float | None = None
    valid_accuracy: float | None = None
    valid_macro_f1: float | None = None

    def summary(self) -> str:
        """One line for the terminal: step, losses, emotion accuracy and macro-F1."""
        parts = [f"epoch {self.epoch}: step {self.global_step}"]
        if self.train_loss is not None:
            parts.append(f"train loss {self.train_loss:.4f}")
        if self.valid_loss is not None:
            parts.append(f"valid loss {self.valid_loss:.4f}")
        if self.valid_accuracy is not None and self.valid_macro_f1 is not None:
            parts.append(f"emotion accuracy {self.valid_accuracy:.4f} macro-F1 {self.valid_macro_f1:.4f}")
        return ", ".join(parts)


@dataclass
class Stage:
    """Everything the loop needs about one stage: the model, what trains, the examples and the clip features."""

    name: str  # "rep" or "eerg"
    model: StageModel
    groups: list[ParamGroup]
    train: list[Example]
    valid: list[Example]
    candidates: list[list[int]]  # label answers for emotion prediction (see emotion_eval)
    video_features: Callable[[VideoRef], torch.Tensor]  # clip -> pooled V_c (m + o, q), from the feature cache
    identity: dict[str, Any] = field(default_factory=dict)  # settings a resumed run must share (JSON-ready)


@dataclass
class StageResult:
    """A finished or stopped run: the model (the kept weights in place) and per-epoch statistics."""

    model: StageModel
    history: list[StageEpochStats]
    global_step: int
    total_steps: int
    kept: dict[str, Any] = field(default_factory=dict)  # which weights: keep, step, valid macro-F1, their prior

    @property
    def completed(self) -> bool:
        """False when ``max_steps`` stopped the run early (continue it with ``resume=True``)."""
        return self.global_step >= self.total_steps


def default_mixed_precision() -> str | None:
    """``None`` (Accelerate decides) when ``accelerate launch`` set a precision or a GPU is present, else "bf16" on a
    CPU with native bf16 arithmetic (oneDNN: AVX512-BF16 or AMX), else "no"."""
    import os

    if os.environ.get("ACCELERATE_MIXED_PRECISION") or torch.cuda.is_available():
        return None
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "no"


def make_accelerator(config: TrainConfig) -> Any:
    """The Accelerator for ``config`` (devices and processes come from ``accelerate launch`` / torchrun, if used)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    # Rows without a clip leave the projector out of the graph; DDP must then not wait for its gradients.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    precision = config.mixed_precision if config.mixed_precision is not None else default_mixed_precision()
    return Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=config.grad_accum,
        kwargs_handlers=[ddp],
    )


def llm_dtype(accelerator: Any) -> torch.dtype:
    """Weight dtype of the frozen LLM: the mixed-precision dtype (halves its memory), else float32."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(accelerator.mixed_precision), torch.float32)


def epoch_order(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool) -> np.ndarray:
    """Example indices of one epoch, shuffled by ``(seed, epoch)`` and wrapped round to whole global batches.

    ``group_by_length``: transformers' length grouping (shuffle, sort mega-batches of 50 batches by length, longest
    batch first), so a batch pads its rows to nearly the same length.
    """
    n = len(lengths)
    if group_by_length:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(_step_seed(seed, epoch))
        order = np.array(get_length_grouped_indices(list(lengths), batch_size, generator=generator))
    else:
        order = np.random.default_rng([seed, epoch]).permutation(n)
    return np.resize(order, math.ceil(n / batch_size) * batch_size)  # (steps * batch_size,)


def _step_seed(seed: int, step: int) -> int:
    """Seed of optimizer step ``step``: dropout depends on (seed, step), never on what ran before a resume."""
    return (seed * 1_000_003 + step) % (2**31 - 64)


def run_identity(identity: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """What a checkpoint or finished run records about its settings (as read back from JSON): identity + engine."""
    return json.loads(json.dumps({**identity, **asdict(config)}))


def finished_run(
    out_dir: Path, stage: str, identity: dict[str, Any]
) -> tuple[list[StageEpochStats], int, dict[str, Any]] | None:
    """(history, total steps, kept weights) of a run already completed in ``out_dir`` with these settings, else None."""
    if has_checkpoint(out_dir) or not (out_dir / TRAINING_LOG).is_file():
        return None
    log = read_json(out_dir / TRAINING_LOG)
    if not isinstance(log, dict) or not log.get("completed") or log.get("stage") != stage:
        return None
    check_resumable(log.get("identity", {}), identity, RESUMABLE_CHANGES, out_dir / TRAINING_LOG)
    return [StageEpochStats(**h) for h in log["history"]], int(log["total_steps"]), log.get("kept", {})


@dataclass
class _Validation:
    """One validation pass: mean answer-token loss, emotion accuracy and macro-F1 (fractions) of the calibrated
    choice (what inference makes) and of the raw one, and the batch-calibration log-prior per label."""

    loss: float
    accuracy: float
    macro_f1: float
    raw_accuracy: float
    raw_macro_f1: float
    log_prior: tuple[float, ...]

    def line(self) -> dict[str, float]:
        """The metrics.jsonl values (the prior is kept with the best weights, not logged)."""
        return {k: v for k, v in asdict(self).items() if k != "log_prior"}


def run_stage(accelerator: Any, stage: Stage, config: TrainConfig, out_dir: str | Path, resume: bool) -> StageResult:
    """Train ``stage.groups`` on ``stage.train`` with AdamW; validate every ``eval_every`` steps and after each epoch;
    log to ``out_dir/metrics.jsonl``; checkpoint into ``out_dir``.

    ``resume=True`` continues from the newest complete checkpoint in ``out_dir/checkpoint`` and ends with the
    weights an uninterrupted run would; without it an existing checkpoint is an error, so an unfinished run is
    never overwritten by accident. With ``keep="best"`` the checkpoint also holds the best-validated weights, and
    the finished run's model holds them.
    """
    from elmd_sdk.trainers.metrics_log import MetricsLog

    config.validate()
    out_dir = Path(out_dir)
    layout = accelerator.num_processes * config.grad_accum
    if config.batch_size % layout:
        raise InputError(
            f"{config.batch_size} must be a multiple of processes x grad_accum = "
            f"{accelerator.num_processes} x {config.grad_accum}",
            field="batch_size",
        )
    if not stage.train:
        raise InputError("no training samples", field="data")
    check_start(out_dir, resume)
    micro = config.batch_size // layout
    steps_per_epoch = math.ceil(len(stage.train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    stop_at = total if config.max_steps is None else min(total, config.max_steps)
    lengths = [sum(len(p) for p in e.pieces) + len(e.target) for e in stage.train]  # text positions (video: same m+o)

    model = stage.model.to(accelerator.device)
    if config.gradient_checkpointing:
        model.llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    optimizer = torch.optim.AdamW(
        [{"params": g.params, "lr": g.lr, "base_lr": g.lr, "name": g.name} for g in stage.groups],
        weight_decay=config.weight_decay,
    )
    identity = run_identity(stage.identity, config)
    global_step, loss_sum, history = 0, 0.0, []
    interval = TrainInterval()
    best: dict[str, Any] = {}  # step, valid_macro_f1 and prior of the best-validated weights (keep="best")
    last_prior: dict[str, Any] = {}  # step and emotion_log_prior of the latest validation
    best_state: dict[str, torch.Tensor] = {}
    scaler_state: dict[str, Any] | None = None
    if resume:
        tensors, meta = resume_checkpoint(out_dir, optimizer)
        check_resumable(meta["identity"], identity, RESUMABLE_CHANGES, checkpoint_dir(out_dir))
        best_state = {k[len(BEST) :]: v for k, v in tensors.items() if k.startswith(BEST)}
        model.load_trainable_state({k: v for k, v in tensors.items() if not k.startswith(BEST)}, str(out_dir))
        global_step, loss_sum = int(meta["global_step"]), float(meta["epoch_loss_sum"])
        history = [StageEpochStats(**h) for h in meta["history"]]
        best = meta.get("best") or {}
        last_prior = meta.get("last_prior") or {}
        interval = TrainInterval(**meta.get("interval", {}))
        scaler_state = meta.get("scaler")
    wrapped, optimizer = accelerator.prepare(model, optimizer)
    if scaler_state is not None and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(scaler_state)

    def checkpoint() -> None:
        if accelerator.is_main_process:
            meta = {
                "stage": stage.name,
                "identity": identity,
                "global_step": global_step,
                "epoch_loss_sum": loss_sum,
                "history": [asdict(h) for h in history],
                "best": best,
                "last_prior": last_prior,
                "interval": asdict(interval),  # the unfinished logging interval: a resumed run logs the same lines
                "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            }
            state = {**model.trainable_state(), **{BEST + k: v for k, v in best_state.items()}}
            save_checkpoint(out_dir, state, optimizer.optimizer, meta)
        accelerator.wait_for_everyone()

    def validate() -> _Validation | None:
        nonlocal best, best_state, last_prior
        if not stage.valid:
            return None
        result = _validate(accelerator, stage)
        log.log(global_step, result.line(), kind="valid")
        last_prior = {"step": global_step, "emotion_log_prior": list(result.log_prior)}
        if config.keep == "best" and (not best or result.macro_f1 > best["valid_macro_f1"]):
            best = {"step": global_step, "valid_macro_f1": result.macro_f1, **last_prior}
            best_state = {k: v.clone() for k, v in model.trainable_state().items()}
        wrapped.train()
        return result

    show = bool(accelerator.is_main_process) and config.progress is not False
    log = MetricsLog(
        out_dir,
        run_name=stage.name,
        report_to=config.report_to,
        config=identity,
        main_process=bool(accelerator.is_main_process),
        resume_step=global_step if resume else None,
    )
    with log, make_progress(disable=None if show and config.progress is None else not show) as progress:
        task = progress.add_task(f"train {stage.name}", total=stop_at, completed=global_step, info="")
        while global_step < stop_at:
            epoch, first = divmod(global_step, steps_per_epoch)
            order = epoch_order(lengths, config.batch_size, config.seed, epoch, config.group_by_length)
            wrapped.train()
            for step in range(first, steps_per_epoch):
                started = time.perf_counter()
                batch = order[step * config.batch_size : (step + 1) * config.batch_size].tolist()
                lr = lr_factor(global_step, total, config.lr_schedule)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * lr
                _set_seed(_step_seed(config.seed, global_step))
                batch_loss = _optimizer_step(accelerator, wrapped, optimizer, stage, batch, config, micro)
                global_step += 1
                loss_sum += batch_loss
                seconds = time.perf_counter() - started
                interval.add(batch_loss, config.batch_size, seconds)
                rate = config.batch_size / max(seconds, 1e-9)
                info = f"epoch {epoch + 1}/{config.epochs} loss {batch_loss:.4f} {rate:.1f} samples/s"
                progress.update(task, advance=1, info=info)
                if global_step % config.logging_steps == 0 or global_step == total:
                    line = interval.line(optimizer.param_groups[0]["lr"], global_step / steps_per_epoch)
                    log.log(global_step, line, kind="train")
                    interval = TrainInterval()
                epoch_done = global_step % steps_per_epoch == 0
                validated = None
                if epoch_done or (config.eval_every and global_step % config.eval_every == 0):
                    validated = validate()
                if epoch_done:
                    stats = StageEpochStats(epoch + 1, global_step, loss_sum / steps_per_epoch)
                    if validated is not None:
                        stats.valid_loss, stats.valid_accuracy = validated.loss, validated.accuracy
                        stats.valid_macro_f1 = validated.macro_f1
                    history.append(stats)
                    loss_sum = 0.0
                if validated or epoch_done or global_step % config.checkpoint_every == 0 or global_step == stop_at:
                    checkpoint()
                if global_step >= stop_at:
                    break
    model.eval()
    kept: dict[str, Any] = {"keep": "last", "step": global_step}
    if last_prior.get("step") == global_step:  # validated at the end: the last weights' prior
        kept["emotion_log_prior"] = last_prior["emotion_log_prior"]
    if config.keep == "best" and best_state and global_step >= total:
        model.load_trainable_state(best_state, f"{out_dir} (best weights)")
        kept = {"keep": "best", **best}
    return StageResult(model, history, global_step, total, kept)


def _optimizer_step(
    accelerator: Any, wrapped: Any, optimizer: Any, stage: Stage, batch: list[int], config: TrainConfig, micro: int
) -> float:
    """One AdamW step on the global ``batch``: this process's share of each micro-step; returns the mean token loss.

    ``backward()`` divides by grad_accum and DDP averages over processes; both are undone, so the gradient is that
    of (NLL summed over the whole global batch) / (its answer tokens), whatever the layout.
    """
    layout = accelerator.num_processes * config.grad_accum
    tokens = sum(len(stage.train[i].target) for i in batch)  # every process knows the global count
    trainable = [p for group in stage.groups for p in group.params]
    nll_sum = torch.zeros((), device=accelerator.device)
    for a in range(config.grad_accum):
        offset = (a * accelerator.num_processes + accelerator.process_index) * micro
        with accelerator.accumulate(wrapped):
            nll = wrapped(*_rows(stage, stage.train, batch[offset : offset + micro]))  # (micro,)
            accelerator.backward(nll.sum() * layout / tokens)
            if accelerator.sync_gradients and config.max_grad_norm:
                accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        nll_sum += nll.detach().sum()
    return float(accelerator.reduce(nll_sum, reduction="sum").item()) / tokens


def _set_seed(seed: int) -> None:
    from accelerate.utils import set_seed

    set_seed(seed, device_specific=True)


def _rows(
    stage: Stage, examples: Sequence[Example], ids: Sequence[int]
) -> tuple[list[Any], list[torch.Tensor | None], list[Any]]:
    """The forward arguments for ``examples[ids]``: prompt pieces, pooled clip features, answer tokens."""
    chosen = [examples[i] for i in ids]
    videos = [None if e.video is None else stage.video_features(e.video) for e in chosen]
    return [e.pieces for e in chosen], videos, [e.target for e in chosen]


def _validate(accelerator: Any, stage: Stage) -> _Validation:
    """Validation sharded over the processes and gathered: answer loss, emotion accuracy and macro-F1 (calibrated
    with the batch prior of these prompts, and raw)."""
    from accelerate.utils import gather_object

    stage.model.eval()
    mine = list(range(accelerator.process_index, len(stage.valid), accelerator.num_processes))
    with accelerator.autocast():
        scored = score_examples(stage.model, stage.valid, mine, stage.candidates, stage.video_features)
    everything: list[ScoredExample] = sorted(gather_object(scored), key=lambda s: s.index)
    gold = [s.gold for s in everything]
    scores = torch.tensor([s.scores for s in everything], dtype=torch.float64)  # (n, L)
    log_prior = batch_log_prior(scores)
    calibrated = (scores - torch.tensor(log_prior, dtype=torch.float64)).argmax(dim=-1).tolist()  # (n,)
    accuracy, macro_f1 = emotion_metrics(gold, calibrated)
    raw_accuracy, raw_macro_f1 = emotion_metrics(gold, [s.predicted for s in everything])
    loss = sum(s.nll for s in everything) / sum(s.tokens for s in everything)
    return _Validation(loss, accuracy, macro_f1, raw_accuracy, raw_macro_f1, log_prior)


def finish_stage(out_dir: Path, stage: str, identity: dict[str, Any], result: StageResult) -> None:
    """Record the run in ``out_dir/training.json`` (the new bundle folder; the old one and its checkpoints go)."""
    atomic_write_json(
        out_dir / TRAINING_LOG,
        {
            "stage": stage,
            "identity": identity,
            "global_step": result.global_step,
            "total_steps": result.total_steps,
            "completed": result.completed,
            "history": [asdict(h) for h in result.history],
            "kept": result.kept,
        },
    )
