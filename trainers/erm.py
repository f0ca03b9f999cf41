"""Training loop of the Emotional Retrieval Module: joint ERT + SSC objective (Eq. 4) with AdamW.

Batches: ``batch_size`` utterances form ``batch_size // 2`` (anchor, positive) pairs of the same
emotion. Every item is an anchor whose positive is its partner and whose negatives are all batch items
of another emotion (n_e = 1 + #negatives, Eq. 2); Eq. 3 runs on every pair of the anchor's n_e + 1
utterances (n_s = (n_e + 1) n_e / 2). An epoch takes every training utterance once as the first item of
a pair, in an order drawn from ``(seed, epoch)``, so a resumed run replays exactly the same batches.
The encoder embeds the utterance text u; its label is u's emotion. The learning rate decays linearly to 0
over the run by default (the paper gives only lr 5e-5): on MELD, 8 epochs ended at a higher emotion match@1
than with a constant rate (``benchmarks/retrieval_quality.py``, README).
Every ``logging_steps`` steps the interval's mean loss, learning rate, samples/s and epoch go to ``OUT/metrics.jsonl``
(:mod:`elmd_sdk.trainers.metrics_log`), and each validation's emotion match@1 as ``match_micro`` and ``match_macro``.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from elmd_sdk.data.records import Sample
from elmd_sdk.errors import InputError
from elmd_sdk.io import atomic_folder, atomic_write_json, read_json
from elmd_sdk.progress import make_progress
from elmd_sdk.retrievers.encoder import ERMConfig, ERMEncoder
from elmd_sdk.trainers.checkpoint import (
    TRAINING_LOG,
    check_resumable,
    check_start,
    checkpoint_dir,
    has_checkpoint,
    resume_checkpoint,
    save_checkpoint,
)
from elmd_sdk.trainers.losses.ert import candidate_mask, ert_loss
from elmd_sdk.trainers.losses.joint import joint_loss
from elmd_sdk.trainers.losses.ssc_contrast import ssc_pair_losses
from elmd_sdk.trainers.metrics_log import MetricsLog, TrainInterval, copy_logs, tracker_names
from elmd_sdk.trainers.schedule import LR_SCHEDULES, lr_factor

# Settings a resumed run may change; every other one must match the checkpoint. The last three change only the logs.
_RESUMABLE_CHANGES = frozenset(
    {
        "max_steps",
        "checkpoint_every",
        "eval_batch_size",
        "device",
        "progress",
        "logging_steps",
        "eval_every",
        "report_to",
    }
)


@dataclass
class ERMTrainConfig:
    """Training settings of the ERM (paper 4.3 defaults: batch 32, lr 5e-5, AdamW; tau and s live in ``erm``)."""

    erm: ERMConfig = field(default_factory=ERMConfig)  # model and loss settings (s, tau, lambda, ablations)
    epochs: int = 1  # passes over the training utterances (the paper does not state it)
    batch_size: int = 32  # utterances per step, i.e. batch_size // 2 same-emotion pairs (paper 4.3)
    lr: float = 5e-5  # AdamW learning rate (paper 4.3)
    weight_decay: float = 0.01  # AdamW weight decay (PyTorch default; the paper does not state it)
    lr_schedule: str = "linear"  # "linear" decay to 0 over all epochs, or "constant" (the paper does not state it)
    seed: int = 0  # seeds SSC initialisation, batch order, positives and dropout
    max_steps: int | None = None  # stop after this many optimizer steps in all (a checkpoint is kept to resume)
    checkpoint_every: int = 200  # steps between checkpoints (one is also written at each epoch end)
    eval_batch_size: int = 64  # encode batch size for the validation metric
    device: str | None = None  # torch device; None lets sentence-transformers choose
    progress: bool | None = None  # rich progress bar; None = only on a terminal
    logging_steps: int = 10  # optimizer steps per metrics.jsonl training line (the interval's mean loss)
    eval_every: int | None = None  # also validate every N optimizer steps (validation always runs at epoch ends)
    report_to: tuple[str, ...] = ()  # Accelerate trackers beside metrics.jsonl, e.g. ("tensorboard",) into OUT/runs

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first impossible setting."""
        self.erm.validate()
        if not (self.erm.use_ert or self.erm.use_ssc):
            raise InputError("at least one of ERT and SSC must be on to train", field="use_ert")
        if self.erm.freeze_encoder and not self.erm.use_ssc:
            raise InputError("a frozen encoder without SSC has nothing to train", field="freeze_encoder")
        for name, low in (
            ("epochs", 1), ("batch_size", 2), ("checkpoint_every", 1), ("eval_batch_size", 1), ("logging_steps", 1)
        ):  # fmt: skip
            if getattr(self, name) < low:
                raise InputError(f"must be at least {low}", field=name)
        if self.eval_every is not None and self.eval_every < 1:
            raise InputError("must be at least 1", field="eval_every")
        tracker_names(self.report_to)  # an unknown tracker or a missing package fails before training
        if self.max_steps is not None and self.max_steps < 0:
            raise InputError("must not be negative", field="max_steps")
        if not self.lr > 0:
            raise InputError("must be positive", field="lr")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InputError(f"must be one of {', '.join(LR_SCHEDULES)}", field="lr_schedule")


@dataclass
class ERMEpochStats:
    """One finished epoch: mean training loss (Eq. 4) and validation emotion match@1 (None without valid data)."""

    epoch: int
    global_step: int
    train_loss: float
    valid_match_micro: float | None = None
    valid_match_macro: float | None = None


@dataclass
class ERMTrainResult:
    """What :func:`train_erm` returns: the trained encoder (also saved in ``out_dir``) and per-epoch stats."""

    encoder: ERMEncoder
    history: list[ERMEpochStats]
    out_dir: Path
    completed: bool  # False when max_steps stopped the run before the last epoch (resume to continue)


def utterance_items(samples: Sequence[Sample]) -> tuple[list[str], list[str]]:
    """The (text, emotion) of every sample's utterance u, skipping utterances without an emotion label."""
    texts: list[str] = []
    emotions: list[str] = []
    for sample in samples:
        if sample.utterance.emotion is not None:
            texts.append(sample.utterance.text)
            emotions.append(sample.utterance.emotion)
    return texts, emotions


def emotion_match_at_1(
    queries: np.ndarray, query_emotions: Sequence[str], corpus: np.ndarray, corpus_emotions: Sequence[str]
) -> tuple[float, float]:
    """Share of queries whose nearest corpus vector (inner product) has the query's emotion: (micro, macro).

    ``queries`` (q, dim) and ``corpus`` (n, dim) are encoder outputs; macro averages the per-emotion
    shares over the emotions present among the queries.
    """
    if len(queries) == 0 or len(corpus) == 0:
        raise InputError("emotion match@1 needs at least one query and one corpus utterance")
    q = torch.from_numpy(queries)
    c = torch.from_numpy(corpus)
    best = torch.cat([(q[i : i + 1024] @ c.T).argmax(1) for i in range(0, len(q), 1024)])  # (q,)
    hits = np.array([corpus_emotions[j] == e for j, e in zip(best.tolist(), query_emotions, strict=True)])
    labels = np.array(query_emotions)
    per_emotion = [hits[labels == e].mean() for e in sorted(set(query_emotions))]
    return float(hits.mean()), float(np.mean(per_emotion))


def epoch_batches(emotions: Sequence[str], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches as item indices [a1, p1, a2, p2, ...], one pair per anchor, fixed by (seed, epoch).

    Utterances whose emotion occurs only once cannot have a positive and are never anchors.
    """
    rng = np.random.default_rng([seed, epoch])
    by_emotion: dict[str, np.ndarray] = {}
    for e in sorted(set(emotions)):
        by_emotion[e] = np.array([i for i, x in enumerate(emotions) if x == e])
    anchors = [i for i, e in enumerate(emotions) if len(by_emotion[e]) > 1]
    order = rng.permutation(np.array(anchors, dtype=np.int64))
    pairs_per_batch = batch_size // 2
    batches: list[list[int]] = []
    for start in range(0, len(order), pairs_per_batch):
        batch: list[int] = []
        for anchor in order[start : start + pairs_per_batch].tolist():
            pool = by_emotion[emotions[anchor]]
            partner = int(pool[rng.integers(len(pool) - 1)])
            if partner == anchor:  # draw among the others: index len-1 stands for the anchor's own slot
                partner = int(pool[-1])
            batch += [anchor, partner]
        batches.append(batch)
    return batches


def _trainable_state(encoder: ERMEncoder, frozen: bool) -> dict[str, torch.Tensor]:
    """The weights a checkpoint must hold: the SSC MLP and, unless frozen, the base encoder."""
    state: dict[str, torch.Tensor] = {}
    if not frozen:
        state.update({f"encoder.{k}": v for k, v in encoder.model.state_dict().items()})
    if encoder.ssc is not None:
        state.update({f"ssc.{k}": v for k, v in encoder.ssc.state_dict().items()})
    return state


def _restore_state(encoder: ERMEncoder, tensors: dict[str, torch.Tensor], frozen: bool) -> None:
    """Inverse of :func:`_trainable_state`."""
    if not frozen:
        encoder.model.load_state_dict({k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")})
    if encoder.ssc is not None:
        encoder.ssc.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ssc.")})


def _set_train_mode(encoder: ERMEncoder, frozen: bool) -> None:
    encoder.model.train(not frozen)  # a frozen encoder runs without dropout
    if encoder.ssc is not None:
        encoder.ssc.train()


def batch_loss(encoder: ERMEncoder, texts: list[str], labels: torch.Tensor) -> torch.Tensor:
    """Eq. 4 for one batch of pairs [a1, p1, a2, p2, ...] with emotion ids ``labels`` (B,)."""
    config = encoder.config
    b = labels.shape[0]
    positive = torch.arange(b, device=labels.device) ^ 1  # (B,): partner of 2k is 2k+1 and back
    candidates = candidate_mask(labels, positive)  # (B, B)
    features = encoder.tokenize(texts)
    if config.freeze_encoder:
        with torch.no_grad():
            e_u = encoder.embed_tokens(features)  # (B, d)
    else:
        e_u = encoder.embed_tokens(features)  # (B, d)
    ert = None
    if config.use_ert:
        # Eq. 2 acts on e_u; with a frozen encoder it trains the SSC through the set vectors instead.
        target = encoder.represent(e_u) if config.freeze_encoder else e_u
        ert = ert_loss(target, positive, candidates, config.tau)  # (B,)
    pairs = ssc_pair_losses(encoder.separate(e_u), config.tau) if config.use_ssc else None  # (B, B)
    return joint_loss(ert, pairs, candidates, config.s, config.lambda_)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_erm(
    config: ERMTrainConfig,
    train: Sequence[Sample],
    valid: Sequence[Sample] | None,
    out_dir: str | Path,
    resume: bool = False,
) -> ERMTrainResult:
    """Train an ERM on the utterances of ``train`` and save it to ``out_dir`` (safetensors + JSON only).

    Checkpoints go to ``out_dir/checkpoint`` every ``checkpoint_every`` steps and at each epoch end; it
    is removed once the last epoch is done. ``resume=True`` continues from it and ends with the same
    weights as an uninterrupted run. With ``valid``, emotion match@1 of the valid utterances against
    the train utterances is computed after every epoch (and every ``eval_every`` steps). Metrics go to
    ``out_dir/metrics.jsonl`` (a resumed run continues it from the checkpoint's step) and the ``report_to`` trackers.
    """
    config.validate()
    out_dir = Path(out_dir)
    if resume and not has_checkpoint(out_dir) and (out_dir / TRAINING_LOG).is_file():
        log = read_json(out_dir / TRAINING_LOG)
        if log.get("completed"):
            if log["train_config"]["epochs"] != config.epochs:
                problem = "training already finished and its checkpoint is gone; train into a new directory"
                raise InputError(problem, file=out_dir, field="epochs")
            check_resumable(log["train_config"], asdict(config), _RESUMABLE_CHANGES, out_dir / TRAINING_LOG)
            history = [ERMEpochStats(**h) for h in log["history"]]
            return ERMTrainResult(ERMEncoder.load(out_dir, config.device), history, out_dir, True)
    check_start(out_dir, resume)
    run = _ERMRun(config, train, valid, out_dir)
    if resume:
        run.restore()
    run.train()
    return run.finish()


class _ERMRun:
    """State of one training run: data, encoder, optimizer, counters; checkpointed and restored as a whole."""

    def __init__(
        self, config: ERMTrainConfig, train: Sequence[Sample], valid: Sequence[Sample] | None, out_dir: Path
    ) -> None:
        self.config = config
        self.out_dir = out_dir
        self.frozen = config.erm.freeze_encoder
        self.texts, self.emotions = utterance_items(train)
        if len(set(self.emotions)) < 2 and config.erm.use_ert:
            raise InputError("ERT needs training utterances of at least two emotions", field="utterance.emotion")
        self.emotion_ids = {e: i for i, e in enumerate(sorted(set(self.emotions)))}
        self.data_sha256 = hashlib.sha256(json.dumps([self.texts, self.emotions]).encode()).hexdigest()
        self.valid_texts, self.valid_emotions = utterance_items(valid or [])
        self.steps_per_epoch = len(epoch_batches(self.emotions, config.batch_size, config.seed, 0))
        if self.steps_per_epoch == 0:
            raise InputError("no emotion has two labelled training utterances to pair", field="utterance.emotion")
        self.total_steps = self.steps_per_epoch * config.epochs
        self.stop_at = self.total_steps if config.max_steps is None else min(self.total_steps, config.max_steps)

        _seed_everything(config.seed)
        self.encoder = ERMEncoder.create(config.erm, device=config.device)
        trained: list[torch.nn.Module] = [] if self.frozen else [self.encoder.model]
        if self.encoder.ssc is not None:
            trained.append(self.encoder.ssc)
        self.encoder.model.requires_grad_(not self.frozen)
        params = [p for module in trained for p in module.parameters()]
        self.optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
        self.global_step = 0
        self.epoch_loss_sum = 0.0
        self.history: list[ERMEpochStats] = []
        self.interval = TrainInterval()
        self.resumed_at: int | None = None  # the checkpoint's step, once restored

    def restore(self) -> None:
        """Continue from ``out_dir/checkpoint``: weights, optimizer, RNG states and counters."""
        tensors, meta = resume_checkpoint(self.out_dir, self.optimizer)
        where = checkpoint_dir(self.out_dir)
        check_resumable(meta["train_config"], asdict(self.config), _RESUMABLE_CHANGES, where)
        if meta.get("data_sha256") != self.data_sha256:
            raise InputError(
                "the checkpoint was trained on other data (its SHA-256 differs); resume with the same --data or "
                "train into another directory",
                file=where,
                field="data",
            )
        _restore_state(self.encoder, {k: v.to(self.encoder.device) for k, v in tensors.items()}, self.frozen)
        self.global_step = int(meta["global_step"])
        self.epoch_loss_sum = float(meta["epoch_loss_sum"])
        self.history = [ERMEpochStats(**h) for h in meta["history"]]
        self.interval = TrainInterval(**meta.get("log_interval", {}))
        self.resumed_at = self.global_step

    def checkpoint(self) -> None:
        """Write ``out_dir/checkpoint`` atomically."""
        meta = {
            "train_config": asdict(self.config),
            "data_sha256": self.data_sha256,
            "global_step": self.global_step,
            "epoch_loss_sum": self.epoch_loss_sum,
            "history": [asdict(h) for h in self.history],
            "log_interval": asdict(self.interval),
        }
        save_checkpoint(self.out_dir, _trainable_state(self.encoder, self.frozen), self.optimizer, meta)

    def step(self, batch: list[int]) -> float:
        """One AdamW step on a batch of item indices; returns the Eq. 4 loss."""
        labels = torch.tensor([self.emotion_ids[self.emotions[i]] for i in batch], device=self.encoder.device)
        loss = batch_loss(self.encoder, [self.texts[i] for i in batch], labels)
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr * lr_factor(self.global_step, self.total_steps, self.config.lr_schedule)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.global_step += 1
        value = loss.detach().item()
        self.epoch_loss_sum += value
        return value

    def validate(self) -> tuple[float, float]:
        """Emotion match@1 (micro, macro) of the valid utterances against the train utterances."""
        config = self.config
        corpus = self.encoder.encode(self.texts, batch_size=config.eval_batch_size)
        queries = self.encoder.encode(self.valid_texts, batch_size=config.eval_batch_size)
        match = emotion_match_at_1(queries, self.valid_emotions, corpus, self.emotions)
        _set_train_mode(self.encoder, self.frozen)
        return match

    def end_epoch(self, epoch: int, match: tuple[float, float] | None) -> None:
        """Record the epoch's mean loss and its validation emotion match@1 (None without validation data)."""
        stats = ERMEpochStats(epoch + 1, self.global_step, self.epoch_loss_sum / self.steps_per_epoch)
        if match is not None:
            stats.valid_match_micro, stats.valid_match_macro = match
        self.history.append(stats)
        self.epoch_loss_sum = 0.0

    def log_interval(self, log: MetricsLog) -> None:
        """Write the interval's training line and start a new interval."""
        lr = self.optimizer.param_groups[0]["lr"]
        log.log(self.global_step, self.interval.line(lr, self.global_step / self.steps_per_epoch), kind="train")
        self.interval = TrainInterval()

    def train(self) -> None:
        """Run steps until ``stop_at``, with progress, metrics log, validation and checkpoints."""
        config = self.config
        progress = make_progress(disable=None if config.progress is None else not config.progress)
        log = MetricsLog(
            self.out_dir, run_name="erm", report_to=config.report_to, config=asdict(config), resume_step=self.resumed_at
        )
        with log, progress:
            task = progress.add_task("train erm", total=self.stop_at, completed=self.global_step, info="")
            while self.global_step < self.stop_at:
                epoch, step_in_epoch = divmod(self.global_step, self.steps_per_epoch)
                batches = epoch_batches(self.emotions, config.batch_size, config.seed, epoch)
                _set_train_mode(self.encoder, self.frozen)
                for batch in batches[step_in_epoch:]:
                    started = time.perf_counter()
                    loss = self.step(batch)
                    seconds = time.perf_counter() - started
                    self.interval.add(loss, len(batch), seconds)
                    info = f"epoch {epoch + 1} loss {loss:.4f} {len(batch) / max(seconds, 1e-9):.0f} samples/s"
                    progress.update(task, advance=1, info=info)
                    if self.global_step % config.logging_steps == 0 or self.global_step == self.stop_at:
                        self.log_interval(log)
                    epoch_done = self.global_step % self.steps_per_epoch == 0
                    match = None
                    due = epoch_done or (config.eval_every is not None and self.global_step % config.eval_every == 0)
                    if self.valid_texts and due:
                        match = self.validate()
                        log.log(self.global_step, {"match_micro": match[0], "match_macro": match[1]}, kind="valid")
                    if epoch_done:
                        self.end_epoch(epoch, match)
                    if epoch_done or self.global_step % config.checkpoint_every == 0:
                        self.checkpoint()
                    if self.global_step >= self.stop_at:
                        break
        if self.global_step % config.checkpoint_every and self.global_step % self.steps_per_epoch:
            self.checkpoint()  # stopped by max_steps between checkpoints: keep the state to resume from

    def finish(self) -> ERMTrainResult:
        """Save the ERM directory and ``training.json``; drop the checkpoint once every epoch is done."""
        completed = self.global_step >= self.total_steps
        encoder = self.encoder
        encoder.invalidate_fingerprint()
        for module in encoder.modules():
            module.eval()
        with atomic_folder(self.out_dir) as folder:  # the new ERM replaces the folder as a whole
            copy_logs(self.out_dir, folder)  # metrics.jsonl, runs/ and curves.png stay
            encoder.write(folder)
            atomic_write_json(
                folder / TRAINING_LOG,
                {
                    "train_config": asdict(self.config),
                    "global_step": self.global_step,
                    "total_steps": self.total_steps,
                    "completed": completed,
                    "history": [asdict(h) for h in self.history],
                },
            )
            if not completed:  # stopped by max_steps: keep the state to resume from
                shutil.copytree(checkpoint_dir(self.out_dir), checkpoint_dir(folder))
        return ERMTrainResult(encoder, self.history, self.out_dir, completed)
