"""Self-separated component (SSC) loss, paper Eq. 3: contrast positions of two sets E_s and E'_s."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def ssc_pair_losses(sets: torch.Tensor, tau: float = 0.5) -> torch.Tensor:
    """Eq. 3, sum_j -log( exp(sim(h_j, h'_j)/tau) / sum_k exp(sim(h_j, h'_k)/tau) ), for every ordered pair of a
    batch of sets (B, s, d): entry [a, b] has E_a as the basic set E_s and E_b as E'_s; the same position j is the
    positive, the s - 1 other positions are negatives; sim is the cosine similarity.

    Returns a (B, B) matrix (the diagonal, a set against itself, is computed but never used by Eq. 4).
    """
    unit = F.normalize(sets, dim=-1)  # (B, s, d)
    logits = torch.einsum("ajd,bkd->abjk", unit, unit) / tau  # (B, B, s, s)
    return (torch.logsumexp(logits, dim=-1) - torch.diagonal(logits, dim1=-2, dim2=-1)).sum(-1)  # (B, B)
