"""The decoding options shared by the commands that generate (chat, eval, bundle create): one flag per
:class:`~elmd_sdk.models.generation.GenerationConfig` setting, unset by default (the bundle's value stays)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from elmd_sdk.models.generation import SEED_MAX, check_generation

MaxNewTokens = Annotated[
    int | None, typer.Option("--max-new-tokens", min=1, help="Most tokens per reply (default: the bundle's).")
]
Seed = Annotated[int | None, typer.Option("--seed", min=0, max=SEED_MAX, help="Seed for reproducible sampling.")]
Sample = Annotated[
    bool | None,
    typer.Option("--sample/--greedy", help="Nucleus sampling (paper 4.3) or greedy decoding (default: the bundle's)."),
]
Temperature = Annotated[
    float | None, typer.Option("--temperature", min=0.0, help="Sampling temperature (default: the bundle's).")
]
TopP = Annotated[
    float | None, typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus probability mass (default: the bundle's).")
]


def generation_overrides(
    *,
    max_new_tokens: int | None = None,
    seed: int | None = None,
    sample: bool | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
) -> dict[str, Any]:
    """The options given on the command line as GenerationConfig overrides, checked (unset ones left out)."""
    given = {
        "max_new_tokens": max_new_tokens,
        "seed": seed,
        "do_sample": sample,
        "temperature": temperature,
        "top_p": top_p,
    }
    return check_generation(given)
