"""The user's emotion as probabilities an app can threshold (issue #21, point 4): the retrieval vote
(:func:`~elmd_sdk.retrievers.retriever.emotion_vote`, the similarity-weighted share of the nearest indexed
utterances' emotions) recalibrated as

    p(e) = max(vote(e), floor) ** weight / Z

a floor that keeps a label no neighbour had possible and a temperature, fitted by maximum likelihood to the users' gold
emotions of validation dialogue (``elmd-sdk calibrate``; recorded in ``bundle.json``'s ``chain`` block as
``utterance_calibration``): the weight by LBFGS for each floor of :data:`FLOORS`, the floor whose fit is the most
likely. A raw vote of ten neighbours is over-confident (a label seven of them share gets 0.7 whatever their
similarity, a label none had 0); the fit only rescales it, so the most probable label stays the vote's. Fitted on
validation dialogue, not on the indexed corpus: an ERM trained on its corpus finds neighbours of the same emotion
there more easily than for new utterances. (A per-label bias was tried offline and left out: fitted on MELD dev's
valid part it moved the choice towards neutral and cost 2-10 points of weighted F1 on the rest.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field

from elmd_sdk.chains.log_linear import fit_log_linear

Vote = Mapping[str, float]  # label -> share of the similarity-weighted vote

VOTE_FLOOR = 1e-3
"""A raw vote's probability floor before its logarithm (in the fused emotion's evidence)."""

FLOORS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1)
"""The floors a calibration tries."""


def log_vote(vote: Vote | None, labels: Sequence[str], floor: float = VOTE_FLOOR) -> list[float]:
    """The vote's floored log-share of each label, in ``labels`` order (uniform when there is no vote)."""
    if vote is None:
        return [-math.log(len(labels))] * len(labels)
    return [math.log(max(vote.get(label, 0.0), floor)) for label in labels]


class VoteCalibration(BaseModel):
    """The fitted floor and temperature (``weight``) of a vote."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(gt=0, allow_inf_nan=False)
    floor: float = Field(gt=0, lt=1)

    def apply(self, vote: Vote | None, labels: Sequence[str]) -> dict[str, float] | None:
        """The calibrated probability of each of ``labels`` (None stays None: no neighbour voted)."""
        if vote is None:
            return None
        scores = [self.weight * value for value in log_vote(vote, labels, self.floor)]
        top = max(scores)
        exps = [math.exp(score - top) for score in scores]
        total = sum(exps)
        return {label: value / total for label, value in zip(labels, exps, strict=True)}


def fit_vote_calibration(votes: Sequence[Vote], gold: Sequence[int], labels: Sequence[str]) -> VoteCalibration:
    """The most likely floor and temperature (:func:`~elmd_sdk.chains.log_linear.fit_log_linear`, no bias) for
    ``n`` votes and the index of each one's gold label among ``labels``."""
    fits = []
    for floor in FLOORS:
        features = torch.tensor([log_vote(vote, labels, floor) for vote in votes])  # (n, L)
        fits.append((fit_log_linear([features], gold, with_bias=False), floor))
    fit, floor = min(fits, key=lambda item: item[0].loss)
    return VoteCalibration(weight=fit.first, floor=floor)
