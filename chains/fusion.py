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
validation set for macro-F1 (:func:`decision_for`); the reported probabilities stay the calibrated ones. Dividing
alone may pick a label at 5% over one at 60%, which an app showing the probability cannot explain: the choice is
also made only among the labels at least a fraction (``decision_min_ratio``, picked with alpha) as probable as the
most probable one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from pydantic import BaseModel, ConfigDict, Field

from elmd_sdk.chains.log_linear import BIAS_L2, fit_log_linear
from elmd_sdk.chains.vote_calibration import Vote, log_vote
from elmd_sdk.models.closed_set import EmotionChoice, decision_weights


class EmotionFusion(BaseModel):
    """The fitted weights of the three sources and the per-label bias (recorded in ``bundle.json``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    llm: float = Field(gt=0, allow_inf_nan=False)
    utterance: float = Field(allow_inf_nan=False)
    response: float = Field(allow_inf_nan=False)
    bias: dict[str, float] = Field(default_factory=dict)  # absent labels: 0
    decision: dict[str, float] = Field(default_factory=dict)  # log-weights added when choosing (absent labels: 0)
    decision_min_ratio: float = Field(default=0.0, ge=0.0, lt=1.0)  # choose among labels at least this fraction as
    # probable as the most probable one

    def choice_bias(self, labels: Sequence[str]) -> tuple[float, ...]:
        """The decision's log-weight of each label, in ``labels`` order."""
        return tuple(self.decision.get(label, 0.0) for label in labels)

    def applied(self, choice: EmotionChoice, utterance_vote: Vote | None, response_vote: Vote | None) -> EmotionChoice:
        """``choice`` fused with one turn's votes and chosen by the decision rule."""
        return replace(
            choice,
            llm_weight=self.llm,
            evidence=self.evidence(choice.labels, utterance_vote, response_vote),
            choice_bias=self.choice_bias(choice.labels),
            choice_min_ratio=self.decision_min_ratio,
        )

    def evidence(
        self, labels: Sequence[str], utterance_vote: Vote | None, response_vote: Vote | None
    ) -> tuple[float, ...]:
        """The votes' part of each label's fused log-score, in ``labels`` order (what is added to ``llm`` x the
        LLM's log-probabilities)."""
        u, r = log_vote(utterance_vote, labels), log_vote(response_vote, labels)
        return tuple(
            self.utterance * a + self.response * b + self.bias.get(e, 0.0) for e, a, b in zip(labels, u, r, strict=True)
        )


def fit_fusion(
    llm_log_probs: torch.Tensor,
    utterance_votes: Sequence[Vote | None],
    response_votes: Sequence[Vote | None],
    gold: Sequence[int],
    labels: Sequence[str],
    *,
    bias_l2: float = BIAS_L2,
) -> EmotionFusion:
    """Maximum-likelihood weights and biases (:func:`~elmd_sdk.chains.log_linear.fit_log_linear`; the LLM's weight
    stays positive) for ``n`` validation replies: the LLM's calibrated log-probabilities ``(n, L)``, each sample's
    two votes and the index of its gold response emotion."""
    n, size = llm_log_probs.shape
    if n != len(gold) or n != len(utterance_votes) or n != len(response_votes) or size != len(labels) or n == 0:
        raise ValueError("fit_fusion needs one row of LLM scores, two votes and a gold label per sample")
    u = torch.tensor([log_vote(v, labels) for v in utterance_votes])  # (n, L)
    r = torch.tensor([log_vote(v, labels) for v in response_votes])  # (n, L)
    fit = fit_log_linear([torch.log_softmax(llm_log_probs.double(), dim=-1), u, r], gold, bias_l2=bias_l2)
    return EmotionFusion(
        llm=fit.first, utterance=fit.others[0], response=fit.others[1], bias=dict(zip(labels, fit.bias, strict=True))
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

DECISION_MIN_RATIOS = (0.0, 0.25, 0.5)
"""The fractions of the top probability tried as the least a chosen label may have."""


@dataclass(frozen=True)
class Decision:
    """A decision rule picked on validation samples."""

    log_weights: dict[str, float]  # -alpha * log(share) per label
    alpha: float
    min_ratio: float


def decision_for(probabilities: torch.Tensor, gold: Sequence[int], labels: Sequence[str]) -> Decision:
    """The decision log-weights ``-alpha * log(share)`` (share: each label's frequency in ``gold``, add-one smoothed)
    and the least ratio to the top probability, with the alpha of :data:`DECISION_EXPONENTS` and the ratio of
    :data:`DECISION_MIN_RATIOS` that give the best macro-F1 on these samples' fused ``probabilities`` ``(n, L)``
    (ties: the smaller change)."""
    from elmd_sdk.metrics.emotion import emotion_scores

    counts = torch.bincount(torch.tensor(list(gold)), minlength=len(labels)).double() + 1.0  # (L,)
    log_share = (counts / counts.sum()).log()
    names = [labels[i] for i in gold]
    probabilities = probabilities.double()

    def macro_f1(alpha: float, ratio: float) -> float:
        chosen = decision_weights(probabilities, -alpha * log_share, ratio).argmax(dim=-1)  # (n,)
        return float(emotion_scores([labels[i] for i in chosen], names, labels)["emotion_macro_f1"])

    grid = [(alpha, ratio) for alpha in DECISION_EXPONENTS for ratio in DECISION_MIN_RATIOS]
    alpha, ratio = max(grid, key=lambda pair: (macro_f1(*pair), -pair[0], -pair[1]))
    return Decision({label: float(-alpha * v) for label, v in zip(labels, log_share, strict=True)}, alpha, ratio)
