"""The frozen visual encoder interface (paper Eq. 5) and the helpers its backends share; imports no backend."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from elmd_sdk.errors import InputError
from elmd_sdk.io import weights_sha256

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class VisualEncoder(ABC):
    """A frozen image encoder applied frame by frame: ``encode`` gives X (Eq. 5) with shape ``(m, o, q)``.

    Backends implement ``_encode_batch`` (a batch of frames, called without gradients) and ``fingerprint`` (the
    identity a trained projector records); this class checks the frames and batches them.
    """

    o: int
    """Tokens per frame."""
    q: int
    """Features per token."""
    batch_size: int = 16
    """Frames per forward pass."""

    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """Eq. 5, X = VisualEncoder(V): ``(m, H, W, 3)`` uint8 RGB frames -> ``(m, o, q)`` float32 features."""
        frames = check_frames(frames)
        with torch.no_grad():  # not inference_mode: X may feed a projector that is being trained
            parts = [
                self._encode_batch(frames[i : i + self.batch_size]) for i in range(0, len(frames), self.batch_size)
            ]
        x = torch.cat(parts).float()  # (m, o, q)
        if tuple(x.shape[1:]) != (self.o, self.q):
            raise RuntimeError(
                f"{type(self).__name__} gave tokens of shape {tuple(x.shape[1:])}, not {(self.o, self.q)}"
            )
        return x

    @abstractmethod
    def _encode_batch(self, frames: np.ndarray) -> torch.Tensor:
        """``(b, H, W, 3)`` uint8 RGB -> ``(b, o, q)``."""

    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """JSON-ready identity (backend, name, o, q, weights sha256) that a projector trained on X records."""


def check_frames(frames: np.ndarray) -> np.ndarray:
    """Frames as a C-contiguous ``(m, H, W, 3)`` uint8 array with m >= 1, else an InputError saying what is wrong."""
    array = np.asarray(frames)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        problem = f"must be a non-empty (m, H, W, 3) uint8 RGB array, got {array.dtype} of shape {array.shape}"
        raise InputError(problem, field="frames")
    return np.ascontiguousarray(array)


def freeze(module: ModuleT) -> ModuleT:
    """Put a module in eval mode with every parameter frozen (the paper keeps the visual encoder fixed)."""
    module.eval()
    module.requires_grad_(False)
    return module


def module_sha256(module: nn.Module) -> str:
    """SHA-256 over a module's state dict (names, dtypes, shapes and bytes): identifies weights however stored."""
    return weights_sha256([module], lambda _i, name, t: f"{name}|{t.dtype}|{tuple(t.shape)}")
