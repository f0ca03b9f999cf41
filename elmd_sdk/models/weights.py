"""Reading one weight file: safetensors, or a PyTorch pickle only when the user opts in (then weights-only)."""

from __future__ import annotations

from pathlib import Path

import torch

from elmd_sdk.errors import InputError
from elmd_sdk.io import load_tensors


def read_weight_file(path: Path, allow_pickle_weights: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of one ``.safetensors`` file, or of a ``.bin`` pickle when ``allow_pickle_weights`` (then with
    ``torch.load(weights_only=True)``): nothing a user loads is a pickle unless they opt in."""
    if path.suffix == ".safetensors":
        return load_tensors(path)
    if not allow_pickle_weights:
        raise InputError(
            "is a pickle-format weight file; convert it to safetensors, or opt in with allow_pickle_weights=True "
            "(loaded with torch.load(weights_only=True))",
            file=path,
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # torch raises several types for damaged or pickled-object files
        raise InputError(f"not a readable weights-only PyTorch file ({exc})", file=path) from None
    if not isinstance(state, dict):
        raise InputError("expected a dict of tensors", file=path)
    return state
