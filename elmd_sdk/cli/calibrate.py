"""``elmd-sdk calibrate``: record in a bundle the emotion prior its model shows on samples like the ones to come, the
calibration of its vote for the user's emotion, and optionally the fitted weights of the fused response emotion."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer


def command(
    bundle: Annotated[Path, typer.Option("--bundle", help="Bundle folder whose bundle.json gets the prior.")],
    data: Annotated[Path, typer.Option("--data", help="JSONL samples like the ones to come, e.g. the validation set.")],
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N samples.")] = None,
    fusion: Annotated[
        bool,
        typer.Option(
            "--fusion/--no-fusion",
            help="Also fit the fused response emotion (the LLM's calibrated choice with the user's recognised emotion "
            "and the retrieved pairs' response emotions) on the samples' gold response emotions, and make it the "
            "bundle's emotion source.",
        ),
    ] = False,
) -> None:
    """Fit the closed-set emotion prior of the bundle's trained chain on --data (batch calibration: the mean label
    probability over those prompts) and write it into bundle.json, so chat, serve and eval divide by it instead of
    the content-free prior. `train rep`/`train eerg` with --valid already record one. A bundle that retrieves also
    gets the calibration of its vote for the user's emotion (fitted to the samples' gold utterance emotions). With
    --fusion, also fit and record the fused emotion's weights."""
    from elmd_sdk.chains.calibrate import calibrate_bundle

    done = calibrate_bundle(bundle, data, limit, fusion=fusion)
    shares = ", ".join(f"{label} {100 * math.exp(value):.1f}%" for label, value in done.prior.items())
    typer.echo(f"{bundle}: emotion prior recorded ({shares})")
    if (vote := done.utterance_calibration) is not None:
        typer.echo(
            f"{bundle}: user's emotion calibration recorded (vote floor {vote.floor:g}, power {vote.weight:.2f})"
        )
    if (fitted := done.fusion) is not None:
        typer.echo(
            f"{bundle}: fused emotion recorded (weights: LLM {fitted.llm:.2f}, user's emotion {fitted.utterance:.2f}, "
            f"response emotions {fitted.response:.2f})"
        )
