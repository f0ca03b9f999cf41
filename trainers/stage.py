"""REP and EERG as a task of the shared training loop (:mod:`elmd_sdk.trainers.loop`): answer-token NLL batches.

The loss of a global batch is the answer-token NLL summed over its examples divided by its answer tokens, so the
update does not depend on how many processes or accumulation steps carry it. Batches are the shuffled examples of an
epoch, grouped by length (transformers' length grouping) unless ``group_by_length`` is off. Validation scores the
emotion of every validation example (sharded over the processes, then gathered): answer loss, accuracy and macro-F1
of the calibrated choice (kept with ``keep="best"``) and of the raw one.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from elmd_sdk.data.records import VideoRef
from elmd_sdk.errors import InputError
from elmd_sdk.models.closed_set import batch_log_prior
from elmd_sdk.trainers.emotion_eval import ScoredExample, emotion_metrics, score_examples
from elmd_sdk.trainers.examples import Example
from elmd_sdk.trainers.loop import LoopResult, ParamGroup, run_identity, run_loop, step_seed
from elmd_sdk.trainers.stage_model import StageModel
from elmd_sdk.trainers.train_config import TrainConfig


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
class StageResult(LoopResult):
    """A finished or stopped REP/EERG run: the loop's result and the model, the kept weights in place."""

    model: StageModel = field(kw_only=True)


def epoch_order(lengths: Sequence[int], batch_size: int, seed: int, epoch: int, group_by_length: bool) -> np.ndarray:
    """Example indices of one epoch, shuffled by ``(seed, epoch)`` and wrapped round to whole global batches.

    ``group_by_length``: transformers' length grouping (shuffle, sort mega-batches of 50 batches by length, longest
    batch first), so a batch pads its rows to nearly the same length.
    """
    n = len(lengths)
    if group_by_length:
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(step_seed(seed, epoch))
        order = np.array(get_length_grouped_indices(list(lengths), batch_size, generator=generator))
    else:
        order = np.random.default_rng([seed, epoch]).permutation(n)
    return np.resize(order, math.ceil(n / batch_size) * batch_size)  # (steps * batch_size,)


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
        """The metrics.jsonl values (the prior is kept with the weights, not logged)."""
        return {k: v for k, v in asdict(self).items() if k != "log_prior"}

    def record(self) -> dict[str, Any]:
        """The batch-calibration prior of these prompts: the bundle of the weights validated here gets it."""
        return {"emotion_log_prior": list(self.log_prior)}


class _StageTask:
    """A REP or EERG stage as the loop's :class:`~elmd_sdk.trainers.loop.LoopTask`."""

    best_metric = "macro_f1"  # keep="best": the highest calibrated validation macro-F1
    may_change: frozenset[str] = frozenset()

    def __init__(self, accelerator: Any, stage: Stage, config: TrainConfig) -> None:
        self.stage = stage
        self.config = config
        self.name = stage.name
        self.identity = run_identity(stage.identity, config)
        self.model = stage.model.to(accelerator.device)
        if config.gradient_checkpointing:
            stage.model.llm.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        self.groups = stage.groups
        self._lengths = [sum(len(p) for p in e.pieces) + len(e.target) for e in stage.train]  # video: same m + o

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        size = self.config.batch_size
        order = epoch_order(self._lengths, size, self.config.seed, epoch, self.config.group_by_length)
        return [order[start : start + size].tolist() for start in range(0, len(order), size)]

    def loss(self, wrapped: Any, batch: list[int], rows: list[int], counts: list[int]) -> torch.Tensor:
        tokens = sum(len(self.stage.train[i].target) for i in batch)  # every process knows the global count
        nll = wrapped(*_rows(self.stage, self.stage.train, rows))  # (rows,)
        return nll.sum() / tokens

    def train_mode(self, wrapped: Any) -> None:
        wrapped.train()

    def validate(self, accelerator: Any) -> _Validation | None:
        return _validate(accelerator, self.stage) if self.stage.valid else None

    def epoch_stats(self, epoch: int, step: int, train_loss: float, validation: Any) -> StageEpochStats:
        stats = StageEpochStats(epoch, step, train_loss)
        if validation is not None:
            stats.valid_loss, stats.valid_accuracy = validation.loss, validation.accuracy
            stats.valid_macro_f1 = validation.macro_f1
        return stats

    def stats_from_dict(self, data: dict[str, Any]) -> StageEpochStats:
        return StageEpochStats(**data)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return self.stage.model.trainable_state()

    def load_trainable_state(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        self.stage.model.load_trainable_state(tensors, source)


def run_stage(accelerator: Any, stage: Stage, config: TrainConfig, out_dir: str | Path, resume: bool) -> StageResult:
    """Train ``stage.groups`` on ``stage.train`` with the shared loop (:func:`~elmd_sdk.trainers.loop.run_loop`:
    validation, metrics, checkpoints and resume); the returned model holds the kept weights, in eval mode."""
    config.validate()
    if not stage.train:
        raise InputError("no training samples", field="data")
    result = run_loop(accelerator, _StageTask(accelerator, stage, config), config, out_dir, resume)
    stage.model.eval()
    return StageResult(result.history, result.global_step, result.total_steps, result.kept, model=stage.model)


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
