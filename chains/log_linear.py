"""The maximum-likelihood fit both the fused response emotion (:mod:`~elmd_sdk.chains.fusion`) and the calibrated
user's emotion (:mod:`~elmd_sdk.chains.vote_calibration`) are: a log-linear (conditional logit) model over the
labels,

    score(e) = exp(a) * x_0(e) + sum_k w_k * x_k(e) + b_e,   p(e) = softmax(score)(e)

with the first feature's weight kept positive (fitted as its logarithm a), free weights for the others, a bias per
label with an L2 penalty that keeps the biases of rare labels finite, and LBFGS on the cross-entropy to the gold
labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

BIAS_L2 = 1e-2
"""The default L2 penalty on the per-label biases."""


@dataclass(frozen=True)
class LogLinearFit:
    first: float  # the first feature's (positive) weight
    others: tuple[float, ...]  # the other features' weights
    bias: tuple[float, ...]  # one per label
    loss: float  # the fitted model's mean cross-entropy on the samples (with the bias penalty)


def fit_log_linear(
    features: Sequence[torch.Tensor], gold: Sequence[int], *, bias_l2: float = BIAS_L2, with_bias: bool = True
) -> LogLinearFit:
    """Fit the model to ``features`` (each ``(n, L)``: a score of every label for each of ``n`` samples; at least
    one) and the index of each sample's gold label; ``with_bias=False`` keeps every bias at 0 (the fit then only
    rescales the features, and the most probable label of a single feature stays its highest-scoring one)."""
    first, *rest = [feature.double() for feature in features]
    n, size = first.shape
    if n == 0 or n != len(gold) or any(feature.shape != first.shape for feature in rest):
        raise ValueError("fit_log_linear needs features of one shape (n, L) and a gold label per sample")
    target = torch.tensor(list(gold))
    log_first = torch.zeros((), dtype=torch.float64, requires_grad=True)
    weights = torch.zeros(len(rest), dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(size, dtype=torch.float64, requires_grad=with_bias)
    fitted = [log_first, weights, bias] if with_bias else [log_first, weights]
    optimizer = torch.optim.LBFGS(fitted, max_iter=500, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        scores = log_first.exp() * first + bias  # (n, L)
        for weight, feature in zip(weights, rest, strict=True):
            scores = scores + weight * feature
        return torch.nn.functional.cross_entropy(scores, target) + bias_l2 * bias.square().sum()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = objective()
        value.backward()
        return value

    optimizer.step(closure)
    with torch.no_grad():
        final = float(objective())
    return LogLinearFit(
        first=float(log_first.detach().exp()),
        others=tuple(float(w) for w in weights.detach()),
        bias=tuple(float(b) for b in bias.detach()),
        loss=final,
    )
