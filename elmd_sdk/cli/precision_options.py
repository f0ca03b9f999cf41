"""The ``--dtype`` and ``--quantize`` options of the commands that load a bundle's LLM (chat, serve, eval) or make a
bundle (bundle create): the precision the LLM loads with (:mod:`elmd_sdk.models.precision`)."""

from __future__ import annotations

from typing import Annotated

import typer

from elmd_sdk.models.precision import DtypeName, Quantization

Dtype = Annotated[
    DtypeName | None,
    typer.Option(
        "--dtype",
        help="Weight dtype of the LLM; auto: the checkpoint's own, bfloat16 when quantized (default: the bundle's; "
        "a new bundle: auto).",
    ),
]
Quantize = Annotated[
    Quantization | None,
    typer.Option(
        "--quantize",
        help="Weight-only quantization of the LLM's linear layers (CPU: torch's kernels, in bfloat16; CUDA: "
        "bitsandbytes) (default: the bundle's; a new bundle: none).",
    ),
]
