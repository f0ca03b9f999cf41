"""Emotion representation training (ERT), paper Eq. 2: a label contrastive loss on utterance embeddings."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def candidate_mask(labels: torch.Tensor, positive: torch.Tensor) -> torch.Tensor:
    """The n_e candidates of Eq. 2 for every anchor of a batch: its positive plus all items of another emotion.

    ``labels`` (B,) holds emotion ids and ``positive`` (B,) the index of each anchor's positive (same
    emotion, another utterance). Other items sharing the anchor's emotion are neither positive nor
    negative and are left out. Returns a (B, B) boolean mask; row i has n_e(i) True entries.
    """
    b = labels.shape[0]
    if positive.shape != (b,):
        raise ValueError(f"positive must have shape ({b},), got {tuple(positive.shape)}")
    rows = torch.arange(b, device=labels.device)
    if bool((positive == rows).any()) or bool((labels[positive] != labels).any()):
        raise ValueError("each anchor's positive must be another item with the same emotion")
    mask = labels.unsqueeze(0) != labels.unsqueeze(1)  # (B, B): other emotions = negatives
    mask[rows, positive] = True
    return mask


def ert_loss(
    embeddings: torch.Tensor, positive: torch.Tensor, candidates: torch.Tensor, tau: float = 0.5
) -> torch.Tensor:
    """Eq. 2 for every anchor: -log( exp(sim(e, e_p)/tau) / sum_{k<=n_e} exp(sim(e, e_k)/tau) ).

    ``embeddings`` (B, d) are the e_u of the batch (any scale: sim is the cosine similarity),
    ``positive`` (B,) the index of each anchor's positive and ``candidates`` (B, B) the mask of its n_e
    candidates (positive included, from :func:`candidate_mask`). Returns the per-anchor losses (B,).
    """
    unit = F.normalize(embeddings, dim=-1)  # (B, d)
    logits = unit @ unit.T / tau  # (B, B): sim(e_i, e_k) / tau
    rows = torch.arange(embeddings.shape[0], device=embeddings.device)
    if not bool(candidates[rows, positive].all()):
        raise ValueError("every anchor's positive must be among its candidates")
    denominator = torch.logsumexp(logits.masked_fill(~candidates, float("-inf")), dim=1)  # (B,)
    return denominator - logits[rows, positive]  # (B,)
