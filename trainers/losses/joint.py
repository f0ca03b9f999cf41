"""Joint ERM objective, paper Eq. 4: L_r = lambda * L_e + 1 / (s * n_s) * sum over n_s set pairs of L_c."""

from __future__ import annotations

import torch


def joint_loss(
    ert: torch.Tensor | None,
    ssc_pairs: torch.Tensor | None,
    candidates: torch.Tensor,
    s: int,
    lambda_: float = 1.0,
) -> torch.Tensor:
    """Eq. 4 averaged over the anchors of a batch; pass ``None`` for a term switched off (Table 3 ablations).

    ``ert`` (B,) holds L_e per anchor (Eq. 2), ``ssc_pairs`` (B, B) holds L_c for every ordered pair of
    sets (Eq. 3, row = basic set) and ``candidates`` (B, B) each anchor's n_e candidates. Anchor i's
    n_e + 1 utterances (itself and its candidates) give n_s = (n_e + 1) n_e / 2 unordered pairs; each
    pair's L_c is the mean of its two directions, so neither set is arbitrarily the basic one.
    Returns a scalar.
    """
    if ert is None and ssc_pairs is None:
        raise ValueError("Eq. 4 needs at least one of the ERT and SSC terms")
    b = candidates.shape[0]
    reference = ert if ert is not None else ssc_pairs
    assert reference is not None
    total = reference.new_zeros(b)  # (B,)
    if ert is not None:
        total = total + lambda_ * ert
    if ssc_pairs is not None:
        eye = torch.eye(b, dtype=torch.bool, device=candidates.device)
        groups = (candidates | eye).to(ssc_pairs.dtype)  # (B, B): anchor i's n_e + 1 utterances
        symmetric = ((ssc_pairs + ssc_pairs.T) / 2).masked_fill(eye, 0.0)  # (B, B), no self-pairs
        pair_sums = ((groups @ symmetric) * groups).sum(1) / 2  # (B,): sum over unordered pairs in group i
        n_e = candidates.sum(1).to(ssc_pairs.dtype)  # (B,)
        n_s = (n_e + 1) * n_e / 2  # (B,)
        total = total + pair_sums / (s * n_s)
    return total.mean()
