"""Ctrl-C during training: say where the last checkpoint is and how to continue, then exit 130 (no traceback)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import typer


@contextlib.contextmanager
def report_checkpoint_on_interrupt(checkpoint: Path) -> Iterator[None]:
    """Run the block; on Ctrl-C print where ``checkpoint`` (the run's checkpoint folder) stands and exit 130."""
    try:
        yield
    except KeyboardInterrupt:
        if checkpoint.exists():
            where = f"the last checkpoint is in {checkpoint}; continue with the same command and --resume"
        else:
            where = "no checkpoint was written yet; run the command again to start over"
        typer.echo(f"\ninterrupted: {where}", err=True)
        raise typer.Exit(130) from None
