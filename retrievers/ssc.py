"""Self-separated component (paper 3.3, Algorithm 1): split one embedding e_u into a set E_s of s vectors.

Reading of Algorithm 1 used here: ``MLP(e_u + c_i; c_i)`` is an MLP applied to the concatenation
``[e_u + c_i ; c_i]`` (width 2d), where ``c_i`` is the augment vector holding ones on block i of size
``g = d // s`` and zeros elsewhere. The MLP is Linear(2d, d) -> GELU -> Linear(d, d), shared by the s
positions; the non-linearity is needed, since a single linear layer would make every h_i the same
function of e_u plus a constant offset per position, and the positions could not carry distinct
information. When ``d`` is not a multiple of ``s`` the last ``d - s * g`` entries of every c_i stay zero,
as in the algorithm.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def augment_vectors(dim: int, s: int) -> torch.Tensor:
    """The s augment vectors of Algorithm 1 as rows of an (s, dim) tensor: c_i = ones on block i of size dim // s."""
    g = dim // s
    if s < 1 or g < 1:
        raise ValueError(f"self-separation coefficient s={s} must be between 1 and the embedding size {dim}")
    c = torch.zeros(s, dim)  # (s, d)
    for i in range(s):
        c[i, i * g : (i + 1) * g] = 1.0
    return c


class SelfSeparation(nn.Module):
    """Algorithm 1: maps e_u (n, d) to E_s (n, s, d), one MLP call per augment vector c_i."""

    augment: torch.Tensor  # (s, d) buffer: the augment vectors c_i as rows

    def __init__(self, dim: int, s: int) -> None:
        super().__init__()
        self.dim = dim
        self.s = s
        # Deterministic from (dim, s), so not stored in the weights file.
        self.register_buffer("augment", augment_vectors(dim, s), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, e_u: torch.Tensor) -> torch.Tensor:
        """Return E_s for a batch of embeddings: (n, d) -> (n, s, d)."""
        n = e_u.shape[0]
        c = self.augment.to(dtype=e_u.dtype).unsqueeze(0).expand(n, -1, -1)  # (n, s, d)
        x = torch.cat([e_u.unsqueeze(1) + c, c], dim=-1)  # (n, s, 2d): [e_u + c_i ; c_i]
        return self.mlp(x)  # (n, s, d)


def set_vector(sets: torch.Tensor) -> torch.Tensor:
    """Flatten sets E_s (n, s, d) into retrieval vectors (n, s*d) whose inner product compares two sets.

    Each h_i is L2-normalised, the s vectors are concatenated and scaled by 1/sqrt(s), so for two sets
    ``<v, v'> = (1/s) * sum_i cos(h_i, h'_i)``: the mean cosine over positions, which an exact
    inner-product (FAISS ``IndexFlatIP``) search computes exactly; the result has unit L2 norm.
    """
    s = sets.shape[1]
    unit = nn.functional.normalize(sets, dim=-1)  # (n, s, d)
    return unit.flatten(1) / math.sqrt(s)  # (n, s*d)
