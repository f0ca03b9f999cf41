"""Spatio-temporal pooling of frame features (paper Eq. 6-8, after Video-ChatGPT)."""

from __future__ import annotations

import torch

from elmd_sdk.errors import InputError


def spatio_temporal_pool(x: torch.Tensor) -> torch.Tensor:
    """Eq. 6-8: V_t = mean over frames, V_s = mean over tokens, V_c = [V_t, V_s].

    ``x`` is X of Eq. 5 with shape ``(..., m, o, q)`` (leading batch dimensions allowed); the result V_c has shape
    ``(..., o + m, q)``: the o temporal tokens first, then the m spatial ones.
    """
    if x.ndim < 3:
        raise InputError(f"must have shape (..., m, o, q), got {tuple(x.shape)}", field="x")
    v_t = x.mean(dim=-3)  # Eq. 6: (..., o, q)
    v_s = x.mean(dim=-2)  # Eq. 7: (..., m, q)
    return torch.cat([v_t, v_s], dim=-2)  # Eq. 8: (..., o + m, q)
