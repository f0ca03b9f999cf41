"""Eq. 10 / Eq. 11 answer-token NLL: labels right-aligned to left-padded rows, loss checked by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from elmd_sdk.trainers.losses.answer_nll import IGNORE, answer_labels, answer_nll


def test_labels_are_right_aligned_with_ignore_before_a_shorter_answer() -> None:
    labels = answer_labels([[7], [3, 4], []])
    assert labels.tolist() == [[IGNORE, 7], [3, 4], [IGNORE, IGNORE]]
    assert labels.dtype == torch.long


def test_nll_by_hand() -> None:
    # Logits are log-probabilities, so log_softmax returns them unchanged: p can be read off directly.
    p = torch.tensor(
        [
            [[1e-6, 0.5, 0.5 - 1e-6], [0.2, 0.2, 0.6], [0.9, 0.05, 0.05]],  # row 0: answer [2]
            [[0.5, 0.25, 0.25], [0.1, 0.6, 0.3], [0.3, 0.3, 0.4]],  # row 1: answer [0, 1]
        ]
    )  # (B=2, W+1=3, vocab=3); the last position predicts nothing
    labels = answer_labels([[2], [0, 1]])
    nll = answer_nll(p.log(), labels)
    # Row 0: only position 1 counts (position 0 is padding: its p(label 0) = 1e-6 would add 13.8).
    # Row 1: -log 0.5 - log 0.6.
    assert nll.tolist() == pytest.approx([-math.log(0.6), -math.log(0.5) - math.log(0.6)], rel=1e-6)


def test_nll_equals_summed_cross_entropy_and_has_its_gradient() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)  # (B, W+1, vocab)
    labels = answer_labels([[1, 2, 3, 4], [5], [6, 7]])
    nll = answer_nll(logits, labels)
    expected = F.cross_entropy(logits[:, :-1].transpose(1, 2), labels, ignore_index=IGNORE, reduction="none").sum(-1)
    torch.testing.assert_close(nll, expected)
    nll.sum().backward()
    assert logits.grad is not None
    # d(-log softmax(z)_y)/dz = softmax(z) - onehot(y) where a label is, 0 elsewhere (padding, the last position)
    expected_grad = torch.zeros_like(logits)
    probs = logits.detach().softmax(-1)
    for row, target in enumerate([[1, 2, 3, 4], [5], [6, 7]]):
        for j, token in enumerate(target, start=4 - len(target)):
            expected_grad[row, j] = probs[row, j] - F.one_hot(torch.tensor(token), 11)
    torch.testing.assert_close(logits.grad, expected_grad)
