"""The training loop ERM, REP and EERG share, on Hugging Face Accelerate: one CPU, one GPU, or many processes.

A :class:`LoopTask` says what a step's loss is and how a run is validated; :func:`run_loop` does the rest, once for
every stage. ``batch_size`` is the GLOBAL batch of one optimizer step: it is split into ``grad_accum`` micro-steps,
each split across the processes, and the loop back-propagates each process's share of the batch's loss so that the
update is the gradient of the whole global batch's loss, whatever the layout. Batches come from ``(seed, epoch)``
and every step re-seeds from ``(seed, step)`` (dropout), so a run resumed from a checkpoint ends with exactly the
weights of an uninterrupted one. Validation runs every ``eval_every`` steps and at epoch ends; with ``keep="best"``
the best-validated weights are kept too and end in the model. Only the main process writes: checkpoints (trainable
weights, AdamW state, loss scaler, history, the unfinished logging interval) through
:mod:`elmd_sdk.trainers.checkpoint`, the metrics log (:mod:`elmd_sdk.trainers.metrics_log`) and the progress bar.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from elmd_sdk.errors import InputError
from elmd_sdk.io import atomic_write_json, read_json
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
from elmd_sdk.trainers.metrics_log import MetricsLog, TrainInterval
from elmd_sdk.trainers.schedule import lr_factor
from elmd_sdk.trainers.train_config import TrainConfig

# Settings a resumed run may change besides a task's own; every other one must equal the checkpoint's.
RESUMABLE_CHANGES = frozenset({"max_steps", "checkpoint_every", "progress", "logging_steps", "report_to"})
BEST = "best."  # checkpoint tensor names of the best-validated weights (with --keep best)


@dataclass
class ParamGroup:
    """Parameters trained with one learning rate (EERG: the prefix and the projector may differ)."""

    name: str
    params: list[torch.nn.Parameter]
    lr: float


class Validation(Protocol):
    """One validation pass of a task."""

    def line(self) -> dict[str, float]:
        """The metrics.jsonl values."""
        ...

    def record(self) -> dict[str, Any]:
        """What the weights validated here carry into training.json's ``kept`` beside their step."""
        ...


class LoopTask(Protocol):
    """What one stage trains and how: the model, its parameter groups, batches, the loss of a share, validation."""

    name: str  # "erm", "rep" or "eerg": run name, progress label, the "stage" of checkpoints and training.json
    identity: dict[str, Any]  # settings a resume must share, as read back from JSON (run_identity)
    may_change: frozenset[str]  # identity keys a resume may change beside RESUMABLE_CHANGES
    groups: list[ParamGroup]
    best_metric: str  # the validation line value keep="best" maximises

    @property
    def model(self) -> torch.nn.Module:
        """What Accelerate wraps (DDP), already on the process's device."""
        ...

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """The global batches of epoch ``epoch`` (item indices), the same on every process and every run."""
        ...

    def loss(self, wrapped: Any, batch: list[int], rows: list[int], counts: list[int]) -> torch.Tensor:
        """This process's share of the loss of the global ``batch``, computed on ``rows`` (its part of this micro-step;
        ``counts``: every process's row count in it, in process order). Shares summed over processes and micro-steps
        are the batch's loss, and the gradients of ``share * processes * grad_accum``, averaged by DDP and divided by
        the accumulation, its gradient."""
        ...

    def train_mode(self, wrapped: Any) -> None:
        """Put the model in training mode (after validation and at each epoch start)."""
        ...

    def validate(self, accelerator: Any) -> Validation | None:
        """Validate the current weights (None without validation data)."""
        ...

    def epoch_stats(self, epoch: int, step: int, train_loss: float, validation: Validation | None) -> Any:
        """The history entry of a finished epoch (a dataclass)."""
        ...

    def stats_from_dict(self, data: dict[str, Any]) -> Any:
        """Inverse of ``asdict`` of :meth:`epoch_stats`'s result."""
        ...

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The trained tensors by name: what a checkpoint holds."""
        ...

    def load_trainable_state(self, tensors: dict[str, torch.Tensor], source: str) -> None:
        """Inverse of :meth:`trainable_state`."""
        ...


@dataclass
class LoopResult:
    """A finished or stopped run: per-epoch statistics, steps, and which weights the model holds."""

    history: list[Any]
    global_step: int
    total_steps: int
    kept: dict[str, Any] = field(default_factory=dict)  # keep, step, and the kept validation's record

    @property
    def completed(self) -> bool:
        """False when ``max_steps`` stopped the run early (continue it with ``resume=True``)."""
        return self.global_step >= self.total_steps


def run_identity(identity: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """What a checkpoint or finished run records about its settings (as read back from JSON): identity + engine."""
    return json.loads(json.dumps({**identity, **asdict(config)}))


def step_seed(seed: int, step: int) -> int:
    """Seed of optimizer step ``step``: dropout depends on (seed, step), never on what ran before a resume."""
    return (seed * 1_000_003 + step) % (2**31 - 64)


def split_bounds(n: int, parts: int) -> list[int]:
    """The ``parts + 1`` boundaries of ``n`` rows cut into contiguous parts whose sizes differ by at most one."""
    size, extra = divmod(n, parts)
    return [k * size + min(k, extra) for k in range(parts + 1)]


def _check_identity(saved: dict[str, Any], current: dict[str, Any], may_change: frozenset[str], where: Path) -> None:
    """Refuse to continue a run with other data or settings that would change its result."""
    if saved.get("data") != current.get("data"):
        raise InputError(
            "the checkpoint was trained on other data (its SHA-256 differs); resume with the same --data or train "
            "into another directory",
            file=where,
            field="data",
        )
    check_resumable(saved, current, RESUMABLE_CHANGES | may_change, where)


def finished_run(
    out_dir: Path, name: str, identity: dict[str, Any], may_change: frozenset[str] = frozenset()
) -> tuple[list[dict[str, Any]], int, dict[str, Any]] | None:
    """(history, total steps, kept weights) of a run of stage ``name`` already completed in ``out_dir`` with these
    settings, else None; the same settings with another epoch count is an :class:`InputError`."""
    if has_checkpoint(out_dir) or not (out_dir / TRAINING_LOG).is_file():
        return None
    log = read_json(out_dir / TRAINING_LOG)
    if not isinstance(log, dict) or not log.get("completed") or log.get("stage") != name:
        return None
    saved = log.get("identity", {})
    if saved.get("epochs") != identity.get("epochs"):
        problem = "training already finished and its checkpoint is gone; train into a new directory"
        raise InputError(problem, file=out_dir, field="epochs")
    _check_identity(saved, identity, may_change, out_dir / TRAINING_LOG)
    return log["history"], int(log["total_steps"]), log.get("kept", {})


def record_run(folder: Path, name: str, identity: dict[str, Any], result: LoopResult) -> None:
    """Record the run in ``folder/training.json`` (its settings, history, and which weights were kept)."""
    atomic_write_json(
        folder / TRAINING_LOG,
        {
            "stage": name,
            "identity": identity,
            "global_step": result.global_step,
            "total_steps": result.total_steps,
            "completed": result.completed,
            "history": [asdict(h) for h in result.history],
            "kept": result.kept,
        },
    )


@dataclass
class _Progress:
    """The counters a checkpoint carries, so a resumed run goes on as if never stopped."""

    global_step: int = 0
    loss_sum: float = 0.0  # of the current epoch's steps
    history: list[Any] = field(default_factory=list)
    interval: TrainInterval = field(default_factory=TrainInterval)  # the unfinished metrics.jsonl interval
    best: dict[str, Any] = field(default_factory=dict)  # step, valid metric and record of the best weights
    last: dict[str, Any] = field(default_factory=dict)  # step and record of the latest validation
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)


def run_loop(accelerator: Any, task: LoopTask, config: TrainConfig, out_dir: str | Path, resume: bool) -> LoopResult:
    """Train ``task`` with AdamW for ``config``; log to ``out_dir/metrics.jsonl``; checkpoint into ``out_dir``.

    ``resume=True`` continues from the newest complete checkpoint in ``out_dir/checkpoint`` and ends with the
    weights an uninterrupted run would; without it an existing checkpoint is an error, so an unfinished run is
    never overwritten by accident.
    """
    out_dir = Path(out_dir)
    layout = accelerator.num_processes * config.grad_accum
    if config.batch_size % layout:
        raise InputError(
            f"{config.batch_size} must be a multiple of processes x grad_accum = "
            f"{accelerator.num_processes} x {config.grad_accum}",
            field="batch_size",
        )
    check_start(out_dir, resume)
    first_epoch = task.epoch_batches(0)
    smallest = min(len(batch) for batch in first_epoch)
    if smallest < layout:
        raise InputError(
            f"an epoch's last batch has {smallest} examples, fewer than processes x grad_accum = {layout}: use fewer "
            "processes or another batch size",
            field="batch_size",
        )
    steps_per_epoch = len(first_epoch)
    total = steps_per_epoch * config.epochs
    stop_at = total if config.max_steps is None else min(total, config.max_steps)
    optimizer = torch.optim.AdamW(
        [{"params": g.params, "lr": g.lr, "base_lr": g.lr, "name": g.name} for g in task.groups],
        weight_decay=config.weight_decay,
    )
    state = _Progress()
    scaler_state: dict[str, Any] | None = None
    if resume:
        tensors, meta = resume_checkpoint(out_dir, optimizer)
        if "identity" not in meta:  # an ERM checkpoint of elmd-sdk before the shared loop
            problem = "written by an earlier elmd-sdk (no 'identity'); train into a new directory"
            raise InputError(problem, file=checkpoint_dir(out_dir), field="identity")
        _check_identity(meta["identity"], task.identity, task.may_change, checkpoint_dir(out_dir))
        task.load_trainable_state({k: v for k, v in tensors.items() if not k.startswith(BEST)}, str(out_dir))
        state = _Progress(
            global_step=int(meta["global_step"]),
            loss_sum=float(meta["epoch_loss_sum"]),
            history=[task.stats_from_dict(h) for h in meta["history"]],
            interval=TrainInterval(**meta.get("interval", {})),
            best=meta.get("best") or {},
            last=meta.get("last_prior") or {},
            best_state={k[len(BEST) :]: v for k, v in tensors.items() if k.startswith(BEST)},
        )
        scaler_state = meta.get("scaler")
    wrapped, optimizer = accelerator.prepare(task.model, optimizer, device_placement=[False, True])
    if scaler_state is not None and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(scaler_state)

    def checkpoint() -> None:
        if accelerator.is_main_process:
            meta = {
                "stage": task.name,
                "identity": task.identity,
                "global_step": state.global_step,
                "epoch_loss_sum": state.loss_sum,
                "history": [asdict(h) for h in state.history],
                "best": state.best,
                "last_prior": state.last,  # the latest validation's step and record (REP/EERG: its emotion prior)
                "interval": asdict(state.interval),  # the unfinished logging interval: a resumed run logs the same
                "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            }
            tensors = {**task.trainable_state(), **{BEST + k: v for k, v in state.best_state.items()}}
            save_checkpoint(out_dir, tensors, optimizer.optimizer, meta)
        accelerator.wait_for_everyone()

    def validate() -> Validation | None:
        result = task.validate(accelerator)
        if result is None:
            return None
        step, values = state.global_step, result.line()
        log.log(step, values, kind="valid")
        state.last = {"step": step, **result.record()}
        metric = f"valid_{task.best_metric}"
        if config.keep == "best" and (not state.best or values[task.best_metric] > state.best[metric]):
            state.best = {"step": step, metric: values[task.best_metric], **result.record()}
            state.best_state = {k: v.clone() for k, v in task.trainable_state().items()}
        task.train_mode(wrapped)
        return result

    show = bool(accelerator.is_main_process) and config.progress is not False
    log = MetricsLog(
        out_dir,
        run_name=task.name,
        report_to=config.report_to,
        config=task.identity,
        main_process=bool(accelerator.is_main_process),
        resume_step=state.global_step if resume else None,
        open_interval=state.interval.steps > 0,
    )
    with log, make_progress(disable=None if show and config.progress is None else not show) as progress:
        bar = progress.add_task(f"train {task.name}", total=stop_at, completed=state.global_step, info="")
        while state.global_step < stop_at:
            epoch, first = divmod(state.global_step, steps_per_epoch)
            batches = task.epoch_batches(epoch)
            task.train_mode(wrapped)
            for batch in batches[first:]:
                started = time.perf_counter()
                factor = lr_factor(state.global_step, total, config.lr_schedule)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                _set_seed(step_seed(config.seed, state.global_step))
                loss = _optimizer_step(accelerator, wrapped, optimizer, task, batch, config)
                state.global_step += 1
                step = state.global_step
                state.loss_sum += loss
                seconds = time.perf_counter() - started
                state.interval.add(loss, len(batch), seconds)
                rate = len(batch) / max(seconds, 1e-9)
                info = f"epoch {epoch + 1}/{config.epochs} loss {loss:.4f} {rate:.1f} samples/s"
                progress.update(bar, advance=1, info=info)
                boundary = step % config.logging_steps == 0 or step == total
                if boundary or step == stop_at:  # a stop mid-interval logs it; resuming rewrites that line
                    line = state.interval.line(optimizer.param_groups[0]["lr"], step / steps_per_epoch)
                    log.log(step, line, kind="train")
                    if boundary:
                        state.interval = TrainInterval()
                epoch_done = step % steps_per_epoch == 0
                validated = None
                if epoch_done or (config.eval_every and step % config.eval_every == 0):
                    validated = validate()
                if epoch_done:
                    state.history.append(task.epoch_stats(epoch + 1, step, state.loss_sum / steps_per_epoch, validated))
                    state.loss_sum = 0.0
                if validated or epoch_done or step % config.checkpoint_every == 0 or step == stop_at:
                    checkpoint()
                if step >= stop_at:
                    break
    kept: dict[str, Any] = {"keep": "last", "step": state.global_step}
    if state.last.get("step") == state.global_step:  # validated at the end: the last weights' record
        kept.update(state.last)
    if config.keep == "best" and state.best_state and state.global_step >= total:
        task.load_trainable_state(state.best_state, f"{out_dir} (best weights)")
        kept = {"keep": "best", **state.best}
    return LoopResult(state.history, state.global_step, total, kept)


def _optimizer_step(
    accelerator: Any, wrapped: Any, optimizer: Any, task: LoopTask, batch: list[int], config: TrainConfig
) -> float:
    """One AdamW step on the global ``batch``: this process's part of each micro-step; returns the batch's loss."""
    processes = accelerator.num_processes
    parts = processes * config.grad_accum
    bounds = split_bounds(len(batch), parts)
    trainable = [p for group in task.groups for p in group.params]
    total = torch.zeros((), device=accelerator.device)
    for micro in range(config.grad_accum):
        first = micro * processes
        counts = [bounds[first + r + 1] - bounds[first + r] for r in range(processes)]
        part = first + accelerator.process_index
        with accelerator.accumulate(wrapped):
            share = task.loss(wrapped, batch, batch[bounds[part] : bounds[part + 1]], counts)
            # DDP averages over processes and backward() divides by grad_accum: both undone here.
            accelerator.backward(share * parts)
            if accelerator.sync_gradients and config.max_grad_norm:
                accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad()
        total += share.detach()
    return float(accelerator.reduce(total, reduction="sum").item())


def _set_seed(seed: int) -> None:
    from accelerate.utils import set_seed

    set_seed(seed, device_specific=True)
