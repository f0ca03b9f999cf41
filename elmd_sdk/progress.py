"""One progress display for every long-running step (training, indexing, evaluation, conversion): a rich bar on a
terminal, plain lines every ``ELMD_PROGRESS_EVERY`` seconds (default 30) elsewhere (CI, nohup, notebooks)."""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def make_progress(*, transient: bool = False, disable: bool | None = None) -> Any:
    """A progress display on stderr with count, elapsed and remaining time and a free text field.

    Tasks may set ``fields={"info": ...}`` (loss, samples per second) shown after the bar.
    ``disable=None``: a rich bar on a terminal (or with ``ELMD_PROGRESS=1``), else :class:`PlainProgress` lines;
    ``disable=True`` shows nothing.
    """
    if disable is None and not (sys.stderr.isatty() or os.environ.get("ELMD_PROGRESS") == "1"):
        return PlainProgress(float(os.environ.get("ELMD_PROGRESS_EVERY", "30")))
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("<"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=Console(stderr=True),
        transient=transient,
        disable=bool(disable),
    )


@dataclass
class _Task:
    description: str
    total: float | None
    completed: float
    info: str
    started: float
    start_count: float


class PlainProgress:
    """The part of rich's ``Progress`` API the SDK uses, printing one line per task at most every ``every`` seconds
    (and a last one at the end of a task that printed before): step, rate, elapsed, ETA and the task's info."""

    def __init__(self, every: float = 30.0) -> None:
        self.every = every
        self._tasks: list[_Task] = []
        self._last = time.monotonic()
        self._printed: set[int] = set()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *_: object) -> None:
        for task_id, task in enumerate(self._tasks):
            if task_id in self._printed and (task.total is None or task.completed < task.total):
                self._print(task_id)

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields: Any) -> int:
        now = time.monotonic()
        self._tasks.append(_Task(description, total, completed, str(fields.get("info", "")), now, completed))
        return len(self._tasks) - 1

    def update(self, task_id: int, *, advance: float = 0, info: str | None = None, **_: Any) -> None:
        task = self._tasks[task_id]
        task.completed += advance
        if info is not None:
            task.info = info
        finished = task.total is not None and task.completed >= task.total
        if time.monotonic() - self._last >= self.every or (finished and task_id in self._printed):
            self._print(task_id)

    def advance(self, task_id: int, advance: float = 1) -> None:
        self.update(task_id, advance=advance)

    def _print(self, task_id: int) -> None:
        task = self._tasks[task_id]
        elapsed = time.monotonic() - task.started
        done = task.completed - task.start_count
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{task.description}: {task.completed:g}" + (f"/{task.total:g}" if task.total else "")]
        if task.total:
            parts[0] += f" ({100 * task.completed / task.total:.0f}%)"
        parts.append(f"{rate:.2f}/s, {_duration(elapsed)} elapsed")
        if task.total and rate > 0:
            parts.append(f"ETA {_duration((task.total - task.completed) / rate)}")
        if task.info:
            parts.append(task.info)
        print(", ".join(parts), file=sys.stderr, flush=True)
        self._last = time.monotonic()
        self._printed.add(task_id)


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
