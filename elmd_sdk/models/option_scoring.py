"""The closed-set scorer: every option's answer line after a prompt, scored by its log-likelihood in one batched pass
over the prompt's KV cache. The chat model's closed-set emotion ("Emotion: sad") and the decisions' options
("Answer: yes") are both scored here.

The lines' shared start ("Emotion:") runs with the prompt and only the rest of each line is scored
(:func:`~elmd_sdk.models.decoding.score_continuations`): the shared start's log-likelihood is the same for every
option, so the option probabilities do not change.

Length normalisation of options that take different numbers of tokens (:data:`LENGTH_NORMALISATIONS`): ``sum`` keeps
the log-likelihood of the whole rest (what the closed-set emotion uses: its labels are one or two tokens each),
``mean`` divides it by the rest's token count (the per-token average). ``benchmarks/decision_options.py`` measures
both, with and without contextual calibration, on MELD dev; the README ("Decisions") gives the numbers.

Several prompts are scored together (:func:`score_prompts`; the prompts of concurrent callers of the batch engine are
gathered by :class:`Gathered`): the beginning they all share (the instruction) runs once, then the beginning that
consecutive prompts share beyond it (the input several questions are asked of) once per run of them, then the rests
as one left-padded batch, ``max_batch`` prompts per pass, then every prompt's lines in one more pass; the scores equal
the one-by-one scores up to floating-point rounding.
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

import torch

from elmd_sdk.models.call import Prompt
from elmd_sdk.models.decoding import (
    Context,
    PromptCache,
    common_length,
    forward,
    plain_dynamic_cache,
    score_continuations,
)

if TYPE_CHECKING:
    from elmd_sdk.models.batching import BatchEngine

T = TypeVar("T")
R = TypeVar("R")
Prefill = Callable[..., Context]  # (prompt, forced tokens, cache=PromptCache) -> the context after them
RUN_SHARED = 16
"""Tokens consecutive prompts must share beyond what all share to run their common beginning once (an input asked
several questions; an ELMD prompt's instruction is what all share)."""

LengthNormalisation = Literal["sum", "mean"]
LENGTH_NORMALISATIONS: tuple[str, ...] = ("sum", "mean")


@dataclass(frozen=True)
class OptionScores:
    """The answer lines of one prompt, scored."""

    rests: list[list[int]]  # each line's tokens after the shared start: what was scored
    log_likelihoods: torch.Tensor  # (L,): sum of log p over each rest's tokens
    prompt_tokens: int  # positions of the prompt the lines follow (video tokens included)

    def normalised(self, how: LengthNormalisation) -> torch.Tensor:
        """The scores under a length normalisation, ``(L,)`` float32 on the CPU."""
        scores = self.log_likelihoods.float().cpu()
        if how == "sum":
            return scores
        return scores / torch.tensor([len(rest) for rest in self.rests], dtype=torch.float32)


def shared_start(lines: Sequence[Sequence[int]]) -> int:
    """Tokens the lines share at their start and that run with the prompt: at least one of every line is left."""
    return min(common_length(*lines), min(len(line) for line in lines) - 1)


def score_lines(
    model: Any,
    prefill: Callable[[list[int]], Context],
    lines: Sequence[Sequence[int]],
    lock: threading.Lock | None = None,
) -> tuple[Context, OptionScores]:
    """Score the token lines after a prompt: ``prefill(tokens)`` runs the prompt followed by ``tokens`` (the lines'
    shared start, leaving at least one token of every line to score), then the rests are scored in one batched pass.
    Returns the context after the shared start (still usable: scoring copied its cache) and the scores."""
    if not lines or any(len(line) == 0 for line in lines):
        raise ValueError("every answer line needs at least one token")
    shared = shared_start(lines)
    context = prefill(list(lines[0][:shared]))
    rests = [list(line[shared:]) for line in lines]
    scores = score_continuations(model, context, rests, lock)  # (L,)
    return context, OptionScores(rests, scores, int(context.attention_mask.shape[1]) - shared)


def score_prompts(
    model: Any,
    items: Sequence[tuple[Prompt, Sequence[Sequence[int]]]],
    prefill: Prefill,
    cache: PromptCache,
    lock: threading.Lock | None = None,
    max_batch: int = 8,
) -> list[OptionScores]:
    """Every prompt's token lines scored: prompts of token ids on a model whose caches can be joined (a plain
    DynamicCache, a forward taking ``position_ids``) in batches of ``max_batch`` (module docstring), others one at a
    time through ``prefill`` (which reuses ``cache``)."""
    tokens = [prompt.input_ids[0].tolist() for prompt, _ in items if prompt.input_ids is not None]
    joinable = len(tokens) == len(items) > 1 and "position_ids" in inspect.signature(model.forward).parameters
    if not joinable:
        return [score_lines(model, partial(prefill, prompt, cache=cache), lines, lock)[1] for prompt, lines in items]
    scores: list[OptionScores] = []
    for start in range(0, len(items), max_batch):
        group = [(ids, lines) for ids, (_, lines) in zip(tokens, items, strict=True)][start : start + max_batch]
        scores += _score_together(model, group, cache, lock) or [
            score_lines(model, partial(prefill, prompt, cache=cache), lines, lock)[1]
            for prompt, lines in items[start : start + max_batch]
        ]
    return scores


def _score_together(
    model: Any, group: Sequence[tuple[list[int], Sequence[Sequence[int]]]], cache: PromptCache, lock: Any
) -> list[OptionScores] | None:
    """Score a group of token prompts together; None when their caches cannot be joined (or they share nothing).

    Three passes over the beginning all prompts share (run once, from ``cache``): the beginnings that runs of
    consecutive prompts share beyond it (the questions asked of one input: the input runs once), then every prompt's
    rest after its run's beginning, then every prompt's lines."""
    starts = [shared_start(lines) for _, lines in group]
    fulls = [ids + list(lines[0][:n]) for (ids, lines), n in zip(group, starts, strict=True)]  # prompt + shared start
    common = min(common_length(*fulls), min(len(full) for full in fulls) - 1)
    if common < 1:
        return None
    prefix = cache.prefill(model, torch.tensor([fulls[0][:common]]), lock)  # (1, c)
    if not plain_dynamic_cache(prefix.cache):
        return None
    runs: list[list[int]] = []  # indices of consecutive prompts sharing at least RUN_SHARED tokens beyond the prefix
    for i, full in enumerate(fulls):
        if runs and common_length(fulls[runs[-1][-1]], full) >= common + RUN_SHARED:
            runs[-1].append(i)
        else:
            runs.append([i])
    ends = [
        common if len(run) == 1 else min(common_length(*(fulls[i] for i in run)), *(len(fulls[i]) - 1 for i in run))
        for run in runs
    ]
    heads = extend_rows(
        model, prefix, [0] * len(runs), [fulls[run[0]][common:end] for run, end in zip(runs, ends, strict=True)], lock
    )
    owner = {i: r for r, run in enumerate(runs) for i in run}
    rows = extend_rows(model, heads, [owner[i] for i in range(len(fulls))],
                       [full[ends[owner[i]]:] for i, full in enumerate(fulls)], lock)  # fmt: skip
    candidates = [list(line[n:]) for (_, lines), n in zip(group, starts, strict=True) for line in lines]
    owners = [row for row, (_, lines) in enumerate(group) for _ in lines]
    scores = score_continuations(model, rows, candidates, lock, rows=owners)  # (sum of L,)
    out, at = [], 0
    for (prompt_ids, lines), n in zip(group, starts, strict=True):
        out.append(OptionScores([list(line[n:]) for line in lines], scores[at : at + len(lines)], len(prompt_ids)))
        at += len(lines)
    return out


def extend_rows(
    model: Any, context: Context, owners: Sequence[int], feeds: Sequence[Sequence[int]], lock: Any
) -> Context:
    """A batched context whose row i is ``context``'s row ``owners[i]`` followed by ``feeds[i]``, the feeds
    left-padded to the longest (the mask is 0 over the padding, positions count each row's real tokens); one forward
    pass, none when every feed is empty (the rows' logits are then the owners')."""
    index = torch.tensor(list(owners))  # (B,)
    cache = copy.deepcopy(context.cache)
    cache.batch_select_indices(index)  # (B, heads, T, d)
    width = max(len(feed) for feed in feeds)
    if width == 0:
        return Context(cache, context.attention_mask[index], context.logits[index], context.call)
    ids = torch.zeros(len(feeds), width, dtype=torch.long)  # (B, W)
    new = torch.zeros(len(feeds), width, dtype=torch.long)  # (B, W): 1 over the real tokens
    positions = torch.zeros(len(feeds), width, dtype=torch.long)  # (B, W)
    before = context.attention_mask[index].sum(1)  # (B,): each row's real tokens so far
    for row, feed in enumerate(feeds):
        if feed:
            ids[row, width - len(feed) :] = torch.tensor(list(feed))
            new[row, width - len(feed) :] = 1
            positions[row, width - len(feed) :] = torch.arange(len(feed)) + before[row]
    mask = torch.cat([context.attention_mask[index], new], dim=1)  # (B, T + W)
    inputs = {"input_ids": ids, "position_ids": positions}
    logits, cache = forward(model, context.call, inputs, mask, cache, lock, last_only=True)  # (B, 1, V)
    kept = torch.tensor([len(feed) > 0 for feed in feeds]).unsqueeze(-1)  # (B, 1): an empty feed keeps its logits
    return Context(cache, mask, torch.where(kept, logits[:, -1, :].float(), context.logits[index]), context.call)


class Gathered(Generic[T, R]):
    """Work of concurrent callers done together in the batch engine's thread. A caller's items wait here; the caller
    that finds no run scheduled schedules one (``engine.run``) and the others only wait for their results. A run takes
    everything waiting when it starts (``run_all`` over the items of every waiting caller, in order), so what arrives
    while the engine is busy is done together next. A failed run is retried caller by caller, so that one caller's
    bad input fails only that caller."""

    def __init__(self) -> None:
        self._waiting: list[tuple[list[T], Future[list[R]]]] = []
        self._scheduled = False
        self._lock = threading.Lock()

    def submit(self, engine: BatchEngine, items: Sequence[T], run_all: Callable[[list[T]], list[R]]) -> list[R]:
        """``run_all(items)``, computed in ``engine``'s thread together with the items other callers submitted
        meanwhile (every caller of one instance passes the same ``run_all``)."""
        future: Future[list[R]] = Future()
        with self._lock:
            self._waiting.append((list(items), future))
            lead, self._scheduled = not self._scheduled, True
        if lead:
            try:
                engine.run(partial(self._run_waiting, run_all))
            except BaseException as error:  # the engine refused the work (closed): nobody waiting gets a result
                for _, waiting in self._take():
                    waiting.set_exception(error)
                raise
        return future.result()

    def _take(self) -> list[tuple[list[T], Future[list[R]]]]:
        with self._lock:
            jobs, self._waiting, self._scheduled = self._waiting, [], False
        return jobs

    def _run_waiting(self, run_all: Callable[[list[T]], list[R]]) -> None:
        jobs = self._take()
        try:
            results = run_all([item for items, _ in jobs for item in items])
        except Exception:
            for items, future in jobs:
                _settle(future, run_all, items)
            return
        at = 0
        for items, future in jobs:
            future.set_result(results[at : at + len(items)])
            at += len(items)


def _settle(future: Future[list[R]], run: Callable[[list[T]], list[R]], items: list[T]) -> None:
    try:
        future.set_result(run(items))
    except Exception as error:  # handed to the caller's thread, which raises it
        future.set_exception(error)
