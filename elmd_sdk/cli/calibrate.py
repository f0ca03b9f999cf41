"""``elmd-sdk calibrate``: record in a bundle the emotion prior its model shows on samples like the ones to come."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer


def command(
    bundle: Annotated[Path, typer.Option("--bundle", help="Bundle folder whose bundle.json gets the prior.")],
    data: Annotated[Path, typer.Option("--data", help="JSONL samples like the ones to come, e.g. the validation set.")],
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N samples.")] = None,
) -> None:
    """Fit the closed-set emotion prior of the bundle's trained chain on --data (batch calibration: the mean label
    probability over those prompts) and write it into bundle.json, so chat, serve and eval divide by it instead of
    the content-free prior. `train rep`/`train eerg` with --valid already record one."""
    from elmd_sdk.evaluate.bundles import record_emotion_prior

    prior = record_emotion_prior(bundle, data, limit)
    shares = ", ".join(f"{label} {100 * math.exp(value):.1f}%" for label, value in prior.items())
    typer.echo(f"{bundle}: emotion prior recorded ({shares})")
