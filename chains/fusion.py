"""The response emotion fused from three sources (issue #21): the LLM's calibrated closed-set probabilities
p_llm(e), the ERM's vote for the user's emotion p_u(e) (the retrieved utterances' labels, similarity-weighted) and
the vote of the retrieved pairs' own response emotions p_r(e) (what people answered in similar situations):

    log p(e) = w_llm * log p_llm(e) + w_u * log p_u(e) + w_r * log p_r(e) + b_e  - log Z

a log-linear (conditional logit) model with three weights and a bias per label, fitted by maximum likelihood on
validation dialogue (``elmd-sdk calibrate``), so its probabilities are calibrated. A vote that is missing (no
retrieval) counts as uniform.

Calibrated probabilities of a skewed label set (MELD: 40% neutral) make the most probable label nearly always the
majority one: accurate, but useless to an app and poor in macro-F1. The choice therefore divides each probability
by the label's validation share to a power alpha (``decision``: log-weights -alpha x log share), alpha picked on the
validation set for macro-F1 (:func:`decision_for`); the reported probabilities stay the calibrated ones.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

Vote = Mapping[str, float]  # label -> share of the similarity-weighted vote

VOTE_FLOOR = 1e-3
"""A vote's probability floor before its logarithm: a label no neighbour had is unlikely, not impossible."""


class EmotionFusion(BaseModel):
    """The fitted weights of the three sources and the per-label bias (recorded in ``bundle.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    llm: float = Field(gt=0, allow_inf_nan=False)
    utterance: float = Field(allow_inf_nan=False)
    response: float = Field(allow_inf_nan=False)
    bias: dict[str, float] = Field(default_factory=dict)  # absent labels: 0
    decision: dict[str, float] = Field(default_factory=dict)  # log-weights added when choosing (absent labels: 0)

    def choice_bias(self, labels: Sequence[str]) -> tuple[float, ...]:
        """The decision's log-weight of each label, in ``labels`` order."""
        return tuple(self.decision.get(label, 0.0) for label in labels)

    def evidence(
        self, labels: Sequence[str], utterance_vote: Vote | None, response_vote: Vote | None
    ) -> tuple[float, ...]:
        """The votes' part of each label's fused log-score, in ``labels`` order (what is added to ``llm`` x the
        LLM's log-probabilities)."""
        u, r = _log_vote(utterance_vote, labels), _log_vote(response_vote, labels)
        return tuple(
            self.utterance * a + self.response * b + self.bias.get(e, 0.0) for e, a, b in zip(labels, u, r, strict=True)
        )


def _log_vote(vote: Vote | None, labels: Sequence[str]) -> list[float]:
    if vote is None:
        return [-math.log(len(labels))] * len(labels)
    return [math.log(max(vote.get(label, 0.0), VOTE_FLOOR)) for label in labels]


def fit_fusion(
    llm_log_probs: torch.Tensor,
    utterance_votes: Sequence[Vote | None],
    response_votes: Sequence[Vote | None],
    gold: Sequence[int],
    labels: Sequence[str],
    *,
    bias_l2: float = 1e-2,
) -> EmotionFusion:
    """Maximum-likelihood weights and biases for ``n`` validation replies: the LLM's calibrated log-probabilities
    ``(n, L)``, each sample's two votes and the index of its gold response emotion. The LLM's weight stays positive
    (fitted as its logarithm); ``bias_l2`` keeps the biases of rare labels finite."""
    n, size = llm_log_probs.shape
    if n != len(gold) or n != len(utterance_votes) or n != len(response_votes) or size != len(labels) or n == 0:
        raise ValueError("fit_fusion needs one row of LLM scores, two votes and a gold label per sample")
    u = torch.tensor([_log_vote(v, labels) for v in utterance_votes], dtype=torch.float64)  # (n, L)
    r = torch.tensor([_log_vote(v, labels) for v in response_votes], dtype=torch.float64)  # (n, L)
    llm = torch.log_softmax(llm_log_probs.double(), dim=-1)  # (n, L)
    target = torch.tensor(list(gold))
    log_llm_weight = torch.zeros((), dtype=torch.float64, requires_grad=True)
    weights = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(size, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_llm_weight, weights, bias], max_iter=500, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimizer.zero_grad()
        scores = log_llm_weight.exp() * llm + weights[0] * u + weights[1] * r + bias  # (n, L)
        value = torch.nn.functional.cross_entropy(scores, target) + bias_l2 * bias.square().sum()
        value.backward()
        return value

    optimizer.step(loss)
    log_llm_weight, weights, bias = log_llm_weight.detach(), weights.detach(), bias.detach()
    return EmotionFusion(
        llm=float(log_llm_weight.exp()),
        utterance=float(weights[0]),
        response=float(weights[1]),
        bias={label: float(b) for label, b in zip(labels, bias, strict=True)},
    )


def fused_probabilities(
    fusion: EmotionFusion,
    llm_log_probs: torch.Tensor,
    utterance_votes: Sequence[Vote | None],
    response_votes: Sequence[Vote | None],
    labels: Sequence[str],
) -> torch.Tensor:
    """The fused probabilities ``(n, L)`` of ``n`` samples from the LLM's calibrated log-probabilities ``(n, L)`` and
    their votes (what :func:`~elmd_sdk.models.closed_set.emotion_probabilities` computes for one call)."""
    evidence = torch.tensor(
        [fusion.evidence(labels, u, r) for u, r in zip(utterance_votes, response_votes, strict=True)],
        dtype=torch.float64,
    )  # (n, L)
    return torch.softmax(fusion.llm * torch.log_softmax(llm_log_probs.double(), dim=-1) + evidence, dim=-1)


DECISION_EXPONENTS = tuple(i / 20 for i in range(21))
"""The powers alpha tried for the decision rule: 0 (the most probable label) to 1 (divided by the label's share)."""


def decision_for(
    probabilities: torch.Tensor, gold: Sequence[int], labels: Sequence[str]
) -> tuple[dict[str, float], float]:
    """The decision log-weights ``-alpha * log(share)`` (share: each label's frequency in ``gold``, add-one smoothed)
    with the alpha of :data:`DECISION_EXPONENTS` that gives the best macro-F1 on these samples' fused
    ``probabilities`` ``(n, L)``, and that alpha."""
    from elmd_sdk.metrics.emotion import emotion_scores

    counts = torch.bincount(torch.tensor(list(gold)), minlength=len(labels)).double() + 1.0  # (L,)
    log_share = (counts / counts.sum()).log()
    names = [labels[i] for i in gold]

    def macro_f1(alpha: float) -> float:
        chosen = (probabilities.double().log() - alpha * log_share).argmax(dim=-1)  # (n,)
        return float(emotion_scores([labels[i] for i in chosen], names, labels)["emotion_macro_f1"])

    alpha = max(DECISION_EXPONENTS, key=lambda a: (macro_f1(a), -a))  # ties: the smaller change
    return {label: float(-alpha * v) for label, v in zip(labels, log_share, strict=True)}, alpha
