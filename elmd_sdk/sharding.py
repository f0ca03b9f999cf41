"""Per-item work split across the processes of ``accelerate launch`` (or torchrun), gathered back in item order, so
that N processes produce what one process produces; with one process everything runs here. Used by evaluation,
index building and ERM validation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def is_main_process() -> bool:
    """Whether this process writes files and reports (always, without ``accelerate launch``)."""
    from accelerate import PartialState

    return bool(PartialState().is_main_process)


def wait_for_everyone() -> None:
    """A barrier across the processes (nothing with one process)."""
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def shard_map(fn: Callable[[list[T]], Sequence[R]], items: Sequence[T]) -> list[R]:
    """``fn`` on this process's share of ``items`` (every ``num_processes``-th, from its process index; one result per
    item), and every process's results in item order, on every process."""
    from accelerate import PartialState

    state = PartialState()
    if state.num_processes == 1:
        return list(fn(list(items)))
    from accelerate.utils import gather_object

    mine = list(range(state.process_index, len(items), state.num_processes))
    results = list(fn([items[i] for i in mine]))
    if len(results) != len(mine):
        raise ValueError(f"{len(results)} results for {len(mine)} items")
    pairs = gather_object(list(zip(mine, results, strict=True)))  # [(item index, result)] of every process
    return [result for _, result in sorted(pairs, key=lambda pair: pair[0])]


def process_device(device: str | None) -> str | None:
    """The device this process runs a model on: ``device`` as given, except that under several processes a bare
    "cuda" is this process's own GPU (Accelerate's ``cuda:LOCAL_RANK``), so the processes do not share GPU 0."""
    from accelerate import PartialState

    state = PartialState()
    return str(state.device) if device == "cuda" and state.num_processes > 1 else device
