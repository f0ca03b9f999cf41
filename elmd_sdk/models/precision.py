"""The weight precisions a language model loads with, defined once (what ``load_llm``, the chat model, a bundle's
``bundle.json`` and the CLI's ``--dtype`` / ``--quantize`` accept); how each is done: :mod:`elmd_sdk.models.quantize`.
Kept free of torch so that reading a bundle's manifest stays quick.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from elmd_sdk.errors import InputError

DtypeName = Literal["auto", "float32", "bfloat16", "float16"]
"""``auto``: the checkpoint's own dtype (bfloat16 when quantizing)."""
Quantization = Literal["none", "int8", "int4"]
"""Weight-only quantization of the linear layers (activations stay in the dtype)."""
DTYPES: tuple[str, ...] = get_args(DtypeName)
QUANTIZATIONS: tuple[str, ...] = get_args(Quantization)
INT4_GROUP_SIZE = 32
"""Input weights sharing one int4 scale and zero point (4 + 2 * 16 / 32 = 5 bits per weight, bfloat16 scales)."""
INT8_MULTIPLE = 16
"""torch's int8 CPU kernel takes input sizes that are multiples of 16 only (torch 2.13 crashes on others)."""


@dataclass(frozen=True)
class Precision:
    """The dtype and weight-only quantization a model loads with (built by :func:`check_precision`)."""

    dtype: DtypeName = "auto"
    quantize: Quantization = "none"


def check_precision(dtype: Any = "auto", quantize: Any = "none", *, file: str | Path | None = None) -> Precision:
    """``dtype`` and ``quantize`` as a :class:`Precision`, else an :class:`InputError` naming ``file`` and the field
    (``dtype`` / ``quantize``) with the allowed values."""
    if dtype not in DTYPES:
        raise InputError(f"must be one of {', '.join(DTYPES)}, got {dtype!r}", file=file, field="dtype")
    if quantize not in QUANTIZATIONS:
        problem = f"must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}"
        raise InputError(problem, file=file, field="quantize")
    return Precision(dtype=dtype, quantize=quantize)
