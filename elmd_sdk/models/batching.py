"""Continuous batching: the decode steps of concurrent calls on one model run as one batched forward pass.

A server answers many requests at once. One engine thread owns every forward pass of its model: work submitted with
:meth:`BatchEngine.run` (a prompt's prefill, closed-set scoring, forced tokens) runs between decode steps, and the
sequences handed to :meth:`BatchEngine.decode` join a batch whose KV caches are kept left-padded to one width, so one
forward pass advances every sequence by one token. Sequences join and leave between steps (each has its own sampling,
processors and stopping). All torch work stays in this one thread (``decoding.py`` says why that matters on a CPU).

Models whose cache cannot be merged (anything but transformers' ``DynamicCache`` of plain or sliding-window layers,
or a forward without ``position_ids``) decode one sequence at a time; the others wait their turn. A sliding-window
layer (Mistral, Gemma-2, Gemma-3) keeps only its last ``sliding_window - 1`` positions, so left-padded rows stay
aligned only while the batch is narrower than that: a sequence joins a batch only if the batch's width, with every
token its rows may still run, stays below the window; otherwise it waits until the batch is empty and runs alone.
"""

from __future__ import annotations

import inspect
import queue
import threading
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from elmd_sdk.errors import ElmdError
from elmd_sdk.models.decoding import Chooser, Context, forward

T = TypeVar("T")
_END = object()  # a sequence's last message: it has ended


@dataclass(eq=False)
class _Sequence:
    """One sequence being decoded: how it picks tokens, its next-token logits and where its tokens go."""

    chooser: Chooser
    logits: torch.Tensor  # (1, vocab): the distribution of its next token
    forced: list[int]  # tokens to run before the first choice (the closed-set emotion line), then empty
    out: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)  # token ids, then _END or an exception
    cancelled: bool = False  # its consumer stopped listening


@dataclass
class _Batch:
    """The sequences decoded together and their shared, left-padded KV cache."""

    rows: list[_Sequence] = field(default_factory=list)
    cache: Any = None  # DynamicCache over (B, heads, W, head_dim), plain or sliding-window layers
    mask: torch.Tensor | None = None  # (B, W), 0 over each row's left padding
    call: Any = None  # the model's forward call style


class BatchEngine:
    """Runs all forward passes of ``model`` in one thread and decodes up to ``max_batch`` sequences together."""

    def __init__(self, model: Any, *, max_batch: int = 8) -> None:
        if max_batch < 1:
            raise ElmdError(f"max_batch must be at least 1, got {max_batch}")
        self.model = model
        self.max_batch = max_batch
        self._inbox: queue.Queue[Any] = queue.Queue()
        self._waiting: list[tuple[_Sequence, Context]] = []
        self._batch = _Batch()
        self._mergeable: bool | None = None  # known after the first sequence
        self._window: int | None = None  # the narrowest sliding window of the model's cache (None: no sliding layer)
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="elmd-batch-engine", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        """Sequences being decoded now."""
        return len(self._batch.rows)

    @property
    def waiting(self) -> int:
        """Sequences waiting for a place in the batch."""
        return len(self._waiting)

    def run(self, work: Callable[[], T]) -> T:
        """Run ``work`` in the engine thread (between decode steps) and return its result or raise its error."""
        future: Future[T] = Future()
        self._submit(("run", work, future))
        return future.result()

    def decode(self, context: Context, chooser: Chooser, forced: Sequence[int] = ()) -> Generator[int, None, None]:
        """Yield the token ids of one sequence after ``context`` (made by :meth:`run` work) and the ``forced`` tokens
        (run in the batch's next step, not yielded), decoded in the batch.

        Closing the generator (or dropping it) takes the sequence out of the batch at the next step.
        """
        sequence = _Sequence(chooser, context.logits, list(forced))
        self._submit(("decode", sequence, context))
        try:
            while (item := sequence.out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            sequence.cancelled = True

    def close(self) -> None:
        """Stop the engine: sequences still decoding end with an error; waits for the thread."""
        self._closed = True
        self._inbox.put(None)
        self._thread.join()

    # -- the engine thread --------------------------------------------------------------------------------------

    def _submit(self, item: tuple[Any, ...]) -> None:
        if self._closed:
            raise ElmdError("the batch engine is closed")
        self._inbox.put(item)

    def _loop(self) -> None:
        while not self._closed:
            self._take_work(block=not self._batch.rows and not self._waiting)
            self._admit()
            if self._batch.rows:
                self._step()
        self._fail_all(ElmdError("the batch engine was closed before this reply ended"))

    def _take_work(self, *, block: bool) -> None:
        """Run submitted work now; queue submitted sequences for admission."""
        while True:
            try:
                item = self._inbox.get(block=block)
            except queue.Empty:
                return
            block = False
            if item is None:  # close()
                return
            if item[0] == "run":
                _, work, future = item
                try:
                    future.set_result(work())
                except BaseException as error:  # handed to the caller's thread, which raises it
                    future.set_exception(error)
            else:
                self._waiting.append((item[1], item[2]))

    def _admit(self) -> None:
        """Move waiting sequences into the batch while there is room (and, for sliding windows, width)."""
        while self._waiting and len(self._batch.rows) < self._capacity(self._waiting[0][1]):
            sequence, context = self._waiting[0]
            if not sequence.cancelled and not self._within_window(sequence, context):
                return  # it runs once the batch is empty
            self._waiting.pop(0)
            if not sequence.cancelled:
                self._join(sequence, context)

    def _capacity(self, context: Context) -> int:
        if self._mergeable is None:
            self._mergeable = _mergeable(self.model, context.cache)
            windows = [layer.sliding_window for layer in context.cache.layers if getattr(layer, "is_sliding", False)]
            self._window = min(windows) if self._mergeable and windows else None
        return self.max_batch if self._mergeable else 1

    def _within_window(self, sequence: _Sequence, context: Context) -> bool:
        """Whether the batch with ``sequence`` stays narrower than the sliding window until every row has ended: its
        width now, plus every row's forced tokens (a step runs the longest feed), plus the most tokens any row may
        still choose. An empty batch always takes a sequence (alone, its cache is the model's own)."""
        batch = self._batch
        if self._window is None or not batch.rows:
            return True
        assert batch.mask is not None
        rows = [*batch.rows, sequence]
        width = max(batch.mask.shape[1], context.attention_mask.shape[1])
        growth = sum(len(row.forced) for row in rows) + max(row.chooser.remaining() for row in rows)
        return width + growth < self._window

    def _join(self, sequence: _Sequence, context: Context) -> None:
        """Add a sequence's cache (1, heads, T, d) to the batch's (B, heads, W, d), left-padding the narrower."""
        batch = self._batch
        if not batch.rows:
            batch.cache, batch.mask, batch.call = context.cache, context.attention_mask, context.call
        else:
            assert batch.mask is not None
            width = max(batch.mask.shape[1], context.attention_mask.shape[1])
            batch.mask = _pad_left(batch.cache, batch.mask, width)
            mask = _pad_left(context.cache, context.attention_mask, width)
            for ours, theirs in zip(batch.cache.layers, context.cache.layers, strict=True):
                ours.keys = torch.cat([ours.keys, theirs.keys])
                ours.values = torch.cat([ours.values, theirs.values])
            batch.mask = torch.cat([batch.mask, mask])  # (B + 1, W)
            _count_positions(batch.cache)
        batch.rows.append(sequence)

    def _step(self) -> None:
        """Choose every sequence's next token, drop the ended ones, run one forward pass for the rest (a sequence
        that has just joined runs its forced tokens instead: rows are right-padded to the longest feed)."""
        batch = self._batch
        feeds: list[list[int]] = []  # what each kept row runs in this step
        keep: list[int] = []
        try:
            for i, sequence in enumerate(batch.rows):
                if sequence.cancelled:
                    continue
                if sequence.forced:
                    feed, sequence.forced = sequence.forced, []
                else:
                    feed = [sequence.chooser.choose(sequence.logits)]
                    sequence.out.put(feed[0])
                    if sequence.chooser.finished():
                        sequence.out.put(_END)
                        continue
                keep.append(i)
                feeds.append(feed)
            self._keep(keep)
            if not batch.rows:
                return
            assert batch.mask is not None
            width = max(len(feed) for feed in feeds)
            ids = batch.mask.new_zeros(len(feeds), width)  # (B, n): right-padded feeds
            new = batch.mask.new_zeros(len(feeds), width)  # (B, n): 1 over each row's real tokens
            for row, feed in enumerate(feeds):
                ids[row, : len(feed)] = torch.tensor(feed)
                new[row, : len(feed)] = 1
            positions = batch.mask.sum(dim=1, keepdim=True) + torch.arange(width)  # (B, n): each row's own
            batch.mask = torch.cat([batch.mask, new], dim=1)  # (B, W + n)
            inputs = {"input_ids": ids}
            if self._mergeable:
                inputs["position_ids"] = positions
            logits, batch.cache = forward(
                self.model, batch.call, inputs, batch.mask, batch.cache, None, last_only=width == 1
            )  # (B, n or 1, vocab)
            for row, (sequence, feed) in enumerate(zip(batch.rows, feeds, strict=True)):
                sequence.logits = logits[row, len(feed) - 1 if width > 1 else -1].float().view(1, -1)  # (1, vocab)
        except Exception as error:  # the batch cannot go on: every sequence in it ends with this error
            self._fail_all(error)

    def _keep(self, indices: list[int]) -> None:
        """Keep only these rows of the batch, and drop padding columns no row needs any more."""
        batch = self._batch
        if len(indices) == len(batch.rows):
            return
        batch.rows = [batch.rows[i] for i in indices]
        if not batch.rows:
            self._batch = _Batch()
            return
        assert batch.mask is not None
        index = torch.tensor(indices, device=batch.mask.device)
        batch.cache.batch_select_indices(index)
        batch.mask = batch.mask[index]
        unused = int(batch.mask.any(dim=0).int().argmax())  # leading columns that are padding in every row
        if unused:
            for layer in batch.cache.layers:
                layer.keys, layer.values = layer.keys[:, :, unused:], layer.values[:, :, unused:]
            _count_positions(batch.cache)
            batch.mask = batch.mask[:, unused:]

    def _fail_all(self, error: BaseException) -> None:
        for sequence in [*self._batch.rows, *(s for s, _ in self._waiting)]:
            sequence.out.put(error)
        self._batch = _Batch()
        self._waiting.clear()


def _mergeable(model: Any, cache: Any) -> bool:
    """Whether sequences of this model can share one batch: a DynamicCache of plain or sliding-window layers, and
    ``position_ids``."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    layers = getattr(cache, "layers", None) or []
    return (
        type(cache) is DynamicCache
        and bool(layers)
        and all(type(layer) in (DynamicLayer, DynamicSlidingWindowLayer) for layer in layers)
        and "position_ids" in inspect.signature(model.forward).parameters
    )


def _count_positions(cache: Any) -> None:
    """After padding, joining or trimming: a sliding-window layer counts the positions it holds (in a batch it never
    dropped any, see ``_within_window``), which sizes its part of the mask."""
    for layer in cache.layers:
        if getattr(layer, "is_sliding", False):
            layer.cumulative_length = layer.keys.shape[-2]


def _pad_left(cache: Any, mask: torch.Tensor, width: int) -> torch.Tensor:
    """Left-pad a cache's keys/values (B, heads, T, d) and its mask (B, T) to ``width`` positions; the new mask."""
    extra = width - mask.shape[1]
    if extra == 0:
        return mask
    for layer in cache.layers:
        layer.keys = F.pad(layer.keys, (0, 0, extra, 0))
        layer.values = F.pad(layer.values, (0, 0, extra, 0))
    _count_positions(cache)
    return F.pad(mask, (extra, 0))
