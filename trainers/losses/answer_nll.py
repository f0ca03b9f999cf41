"""Answer-token negative log-likelihood, paper Eq. 10 (REP) and Eq. 11 (EERG): -sum_t log p(a_t | x, a_<t).

The answer a is the emotion line for REP and the emotion, the response and end-of-sequence for EERG
(:func:`~elmd_sdk.trainers.examples.answer_ids`); x is the prompt with E_v spliced in. Rows are left-padded, so every
answer ends at the last position, and the logits of the last ``W + 1`` positions (W = the longest answer) are all
the loss needs: ``logits[:, j]`` predicts ``labels[:, j]``, the last logit predicts nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

IGNORE = -100  # label of a position that is not an answer token (transformers' ignore index)


def answer_labels(targets: Sequence[Sequence[int]], device: torch.device | str | None = None) -> torch.Tensor:
    """The labels of a batch of answers: (B, W), W = the longest answer, each row's ids right-aligned, IGNORE before."""
    width = max(len(target) for target in targets)
    labels = torch.full((len(targets), width), IGNORE, dtype=torch.long, device=device)  # (B, W)
    for row, target in enumerate(targets):
        labels[row, width - len(target) :] = torch.tensor(list(target), dtype=torch.long, device=device)
    return labels


def answer_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Summed NLL of each row's answer tokens: logits (B, W + 1, vocab) of the last W + 1 positions and
    :func:`answer_labels` (B, W) -> (B,), the per-sample term of Eq. 10 / Eq. 11."""
    log_probs = logits[:, :-1].float().log_softmax(-1)  # (B, W, vocab): position j predicts label j
    picked = log_probs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, W)
    return -picked.masked_fill(labels == IGNORE, 0.0).sum(-1)  # (B,)
