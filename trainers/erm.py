"""Training of the Emotional Retrieval Module: joint ERT + SSC objective (Eq. 4) with AdamW, on the shared training
loop (:mod:`elmd_sdk.trainers.loop`: checkpoints, resume, metrics, validation, processes).

Batches: ``batch_size`` utterances form ``batch_size // 2`` (anchor, positive) pairs of the same
emotion. Every item is an anchor whose positive is its partner and whose negatives are all batch items
of another emotion (n_e = 1 + #negatives, Eq. 2); Eq. 3 runs on every pair of the anchor's n_e + 1
utterances (n_s = (n_e + 1) n_e / 2). An epoch takes every training utterance once as the first item of
a pair, in an order drawn from ``(seed, epoch)``, so a resumed run replays exactly the same batches.
The encoder embeds the utterance text u; its label is u's emotion. The learning rate decays linearly to 0
over the run by default (the paper gives only lr 5e-5): on MELD, 8 epochs ended at a higher emotion match@1
than with a constant rate (``benchmarks/retrieval_quality.py``, README).

Under ``accelerate launch`` every process embeds its share of the global batch, and the embeddings are gathered
with their gradients (:func:`gather_rows`, sentence-transformers' ``all_gather_with_grad``), so ERT and SSC contrast
the whole global batch: N processes compute the loss and the update of one process at the same ``batch_size``.
Validation emotion match@1 goes to ``OUT/metrics.jsonl`` as ``match_micro`` and ``match_macro``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from elmd_sdk.data.records import Sample
from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.io import atomic_folder
from elmd_sdk.retrievers.encoder import ERMConfig, ERMEncoder
from elmd_sdk.retrievers.ssc import set_vector
from elmd_sdk.trainers.checkpoint import checkpoint_dir
from elmd_sdk.trainers.loop import ParamGroup, finished_run, record_run, run_identity, run_loop
from elmd_sdk.trainers.losses.ert import candidate_mask, ert_loss
from elmd_sdk.trainers.losses.joint import joint_loss
from elmd_sdk.trainers.losses.ssc_contrast import ssc_pair_losses
from elmd_sdk.trainers.metrics_log import copy_logs
from elmd_sdk.trainers.train_config import TrainConfig, make_accelerator

# Settings a resumed ERM run may change beside the loop's: they change neither the batches nor the weights.
_RESUMABLE_CHANGES = frozenset({"eval_every", "eval_batch_size", "device"})
# Engine settings the ERM takes only at these values: its batches are same-emotion pairs contrasted as a whole.
_ERM_ONLY = {"grad_accum": 1, "gradient_checkpointing": False, "group_by_length": False}


def erm_train_defaults() -> TrainConfig:
    """The engine settings an ERM run starts from: batch 32 (paper 4.3); AdamW weight decay 0.01 (PyTorch's default;
    the paper does not state it); no clipping; float32; a checkpoint every 200 steps."""
    return TrainConfig(
        batch_size=32,
        weight_decay=0.01,
        max_grad_norm=None,
        checkpoint_every=200,
        mixed_precision="no",
        group_by_length=False,
    )


@dataclass
class ERMTrainConfig:
    """Training settings of the ERM (paper 4.3 defaults: batch 32, lr 5e-5, AdamW; tau and s live in ``erm``)."""

    erm: ERMConfig = field(default_factory=ERMConfig)  # model and loss settings (s, tau, lambda, ablations)
    lr: float = 5e-5  # AdamW learning rate (paper 4.3)
    eval_batch_size: int = 64  # encode batch size for the validation metric
    device: str | None = None  # torch device; None = Accelerate's (one per process under accelerate launch)
    train: TrainConfig = field(default_factory=erm_train_defaults)  # epochs, batch, seed, checkpoints, logging, ...

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first impossible setting."""
        self.erm.validate()
        self.train.validate()
        if not (self.erm.use_ert or self.erm.use_ssc):
            raise InputError("at least one of ERT and SSC must be on to train", field="use_ert")
        if self.erm.freeze_encoder and not self.erm.use_ssc:
            raise InputError("a frozen encoder without SSC has nothing to train", field="freeze_encoder")
        if self.train.batch_size < 2:
            raise InputError("must be at least 2", field="batch_size")
        for name, value in _ERM_ONLY.items():
            if getattr(self.train, name) != value:
                problem = f"must be {value!r} for the ERM: its batches are same-emotion pairs contrasted as a whole"
                raise InputError(problem, field=name)
        if self.eval_batch_size < 1:
            raise InputError("must be at least 1", field="eval_batch_size")
        if not self.lr > 0:
            raise InputError("must be positive", field="lr")


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


def _trainable_state(encoder: ERMEncoder) -> dict[str, torch.Tensor]:
    """The weights a checkpoint must hold: the SSC MLP and the base encoder's trained ones (none when frozen, the
    LoRA adapters' with ``lora_rank``)."""
    state = {f"encoder.{k}": v for k, v in encoder.trained_base_state().items()}
    if encoder.ssc is not None:
        state.update({f"ssc.{k}": v for k, v in encoder.ssc.state_dict().items()})
    return state


def _restore_state(encoder: ERMEncoder, tensors: dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`_trainable_state`."""
    base = {k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")}
    if set(base) != set(encoder.trained_base_state()):
        raise MismatchError("the checkpoint's encoder weights are not the ones this ERM trains")
    if base:
        encoder.model.load_state_dict(base, strict=not encoder.config.lora_rank)
    if encoder.ssc is not None:
        encoder.ssc.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ssc.")})


def gather_rows(local: torch.Tensor, counts: Sequence[int]) -> torch.Tensor:
    """Every process's rows (``counts[r]`` from process r) of ``local`` (n_r, ...) in process order, (sum, ...), with
    the gradient of the result flowing back to each process's own rows: sentence-transformers' in-batch-negative
    gathering (``all_gather_with_grad``, i.e. ``torch.distributed.nn.all_gather``), the rows padded to equal count."""
    if len(counts) == 1:
        return local
    from sentence_transformers.util import all_gather_with_grad

    width = max(counts)
    padded = F.pad(local, (0, 0) * (local.dim() - 1) + (0, width - local.shape[0]))  # (width, ...)
    gathered = all_gather_with_grad(padded)  # (processes * width, ...)
    return torch.cat([gathered[r * width : r * width + n] for r, n in enumerate(counts)])


class ERMNet(torch.nn.Module):
    """The encoder's trained modules as one module (what Accelerate wraps): texts' features -> (e_u, E_s)."""

    def __init__(self, encoder: ERMEncoder) -> None:
        super().__init__()
        self.encoder = encoder.model
        self.ssc = encoder.ssc
        self.frozen = encoder.config.freeze_encoder

    def forward(self, features: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """e_u (n, d) (Eq. 1; without gradients when the encoder is frozen) and E_s (n, s, d) (Algorithm 1, or None
        without SSC)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            e_u = self.encoder(features)["sentence_embedding"]  # (n, d)
        return e_u, (self.ssc(e_u) if self.ssc is not None else None)


def batch_loss(config: ERMConfig, e_u: torch.Tensor, sets: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
    """Eq. 4 for one batch of pairs [a1, p1, a2, p2, ...]: its embeddings e_u (B, d), sets E_s (B, s, d) (None
    without SSC) and emotion ids ``labels`` (B,)."""
    b = labels.shape[0]
    positive = torch.arange(b, device=labels.device) ^ 1  # (B,): partner of 2k is 2k+1 and back
    candidates = candidate_mask(labels, positive)  # (B, B)
    ert = None
    if config.use_ert:
        # Eq. 2 acts on e_u; with a frozen encoder it trains the SSC through the set vectors instead.
        target = set_vector(sets) if config.freeze_encoder and sets is not None else e_u  # (B, s*d) or (B, d)
        ert = ert_loss(target, positive, candidates, config.tau)  # (B,)
    pairs = ssc_pair_losses(sets, config.tau) if sets is not None else None  # (B, B)
    return joint_loss(ert, pairs, candidates, config.s, config.lambda_)


@dataclass
class _Match:
    """One validation: emotion match@1 of the valid utterances against the train utterances."""

    micro: float
    macro: float

    def line(self) -> dict[str, float]:
        return {"match_micro": self.micro, "match_macro": self.macro}

    def record(self) -> dict[str, Any]:
        return {}


class _ERMTask:
    """ERM training as the loop's :class:`~elmd_sdk.trainers.loop.LoopTask`."""

    name = "erm"
    best_metric = "match_macro"
    may_change = _RESUMABLE_CHANGES

    def __init__(
        self,
        accelerator: Any,
        config: ERMTrainConfig,
        items: tuple[list[str], list[str]],
        valid: Sequence[Sample] | None,
        identity: dict[str, Any],
    ) -> None:
        self.config = config
        self.identity = identity
        self.frozen = config.erm.freeze_encoder
        self.texts, self.emotions = items
        if len(set(self.emotions)) < 2 and config.erm.use_ert:
            raise InputError("ERT needs training utterances of at least two emotions", field="utterance.emotion")
        if not self.epoch_batches(0):
            raise InputError("no emotion has two labelled training utterances to pair", field="utterance.emotion")
        self.emotion_ids = {e: i for i, e in enumerate(sorted(set(self.emotions)))}
        self.valid_texts, self.valid_emotions = utterance_items(valid or [])
        _set_seed(config.train.seed)  # SSC initialisation
        self.encoder = ERMEncoder.create(config.erm, device=config.device or str(accelerator.device))
        if not config.erm.lora_rank:  # with LoRA, add_lora left the adapters alone trainable
            self.encoder.model.requires_grad_(not self.frozen)
        self.model = ERMNet(self.encoder)
        trained = [p for p in self.encoder.model.parameters() if p.requires_grad]
        if self.encoder.ssc is not None:
            trained += list(self.encoder.ssc.parameters())
        self.groups = [ParamGroup("erm", trained, config.lr)]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        return epoch_batches(self.emotions, self.config.train.batch_size, self.config.train.seed, epoch)

    def loss(self, wrapped: Any, batch: list[int], rows: list[int], counts: list[int]) -> torch.Tensor:
        device = self.encoder.device
        labels = torch.tensor([self.emotion_ids[self.emotions[i]] for i in batch], device=device)  # (B,)
        e_u, sets = wrapped(self.encoder.tokenize([self.texts[i] for i in rows]))  # (n_r, d), (n_r, s, d)
        e_u = gather_rows(e_u, counts)  # (B, d)
        sets = gather_rows(sets, counts) if sets is not None else None  # (B, s, d)
        return batch_loss(self.config.erm, e_u, sets, labels) * (len(rows) / len(batch))

    def train_mode(self, wrapped: Any) -> None:
        self.encoder.model.train(not self.frozen)  # a frozen encoder runs without dropout
        if self.encoder.ssc is not None:
            self.encoder.ssc.train()

    def validate(self, accelerator: Any) -> _Match | None:
        if not self.valid_texts:
            return None
        size = self.config.eval_batch_size
        corpus = self.encoder.encode(self.texts, batch_size=size)
        queries = self.encoder.encode(self.valid_texts, batch_size=size)
        return _Match(*emotion_match_at_1(queries, self.valid_emotions, corpus, self.emotions))

    def epoch_stats(self, epoch: int, step: int, train_loss: float, validation: Any) -> ERMEpochStats:
        stats = ERMEpochStats(epoch, step, train_loss)
        if validation is not None:
            stats.valid_match_micro, stats.valid_match_macro = validation.micro, validation.macro
        return stats

    def stats_from_dict(self, data: dict[str, Any]) -> ERMEpochStats:
        return ERMEpochStats(**data)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return _trainable_state(self.encoder)

    def load_trainable_state(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        _restore_state(self.encoder, {k: v.to(self.encoder.device) for k, v in tensors.items()})


def _set_seed(seed: int) -> None:
    from accelerate.utils import set_seed

    set_seed(seed)


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
    Under ``accelerate launch`` only the main process writes; every process returns the trained encoder.
    """
    config.validate()
    out_dir = Path(out_dir)
    items = utterance_items(train)
    data = hashlib.sha256(json.dumps(list(items)).encode()).hexdigest()
    settings = {"stage": "erm", **{k: v for k, v in asdict(config).items() if k != "train"}, "data": data}
    identity = run_identity(settings, config.train)
    finished = finished_run(out_dir, "erm", identity, _RESUMABLE_CHANGES) if resume else None
    if finished is not None:
        history = [ERMEpochStats(**h) for h in finished[0]]
        return ERMTrainResult(ERMEncoder.load(out_dir, config.device), history, out_dir, True)
    accelerator = make_accelerator(config.train)
    task = _ERMTask(accelerator, config, items, valid, identity)
    result = run_loop(accelerator, task, config.train, out_dir, resume)
    encoder = task.encoder
    encoder.invalidate_fingerprint()
    for module in encoder.modules():
        module.eval()
    if accelerator.is_main_process:
        with atomic_folder(out_dir) as folder:  # the new ERM replaces the folder as a whole
            copy_logs(out_dir, folder)  # metrics.jsonl, runs/ and curves.png stay
            encoder.write(folder)
            record_run(folder, "erm", identity, result)
            if not result.completed:  # stopped by max_steps: keep the state to resume from
                shutil.copytree(checkpoint_dir(out_dir), checkpoint_dir(folder))
    accelerator.wait_for_everyone()
    return ERMTrainResult(encoder, result.history, out_dir, result.completed)
