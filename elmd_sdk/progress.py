"""One rich progress bar style for every long-running step (training, indexing, conversion)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def make_progress(*, transient: bool = False, disable: bool | None = None) -> Progress:
    """A progress display on stderr with count, elapsed and remaining time and a free text field.

    Tasks may set ``fields={"info": ...}`` (loss, samples per second) shown after the bar.
    ``disable=None`` hides it when stderr is not a terminal unless ``ELMD_PROGRESS=1``.
    """
    import os

    if disable is None:
        disable = not (sys.stderr.isatty() or os.environ.get("ELMD_PROGRESS") == "1")
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
        disable=disable,
    )
