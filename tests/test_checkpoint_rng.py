"""A resumed run draws the same random numbers as one never stopped: torch, NumPy (with its cached Gaussian) and
Python's ``random`` are all restored by ``load_checkpoint``."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from elmd_sdk.trainers.checkpoint import load_checkpoint, save_checkpoint


def _draws() -> dict[str, list[float]]:
    """What a training step may draw from each generator: shuffling (Python), augmentation (NumPy), dropout (torch)."""
    return {
        "python": [random.random() for _ in range(3)],
        "numpy": np.random.rand(3).tolist(),
        "numpy_gauss": np.random.standard_normal(3).tolist(),
        "torch": torch.rand(3).tolist(),
    }


def test_load_restores_every_generator_as_it_was_at_save(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(1)
    np.random.standard_normal()  # leaves the second Gaussian of its pair cached in NumPy's state
    torch.manual_seed(1)
    save_checkpoint(tmp_path, {"w": torch.zeros(1)}, None, {"step": 1})
    expected = _draws()
    random.seed(2)  # another process starts from other states
    np.random.seed(2)
    torch.manual_seed(2)
    assert _draws() != expected
    assert load_checkpoint(tmp_path) is not None
    assert _draws() == expected
