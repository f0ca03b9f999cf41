"""The model's label prior that closed-set calibration divides by: contextual calibration (Zhao et al., 2021) from
content-free utterances, batch calibration (Zhou et al., ICLR 2024) from inputs like the ones to come. Both score
every label's answer line with the chat model, uncalibrated, for prompts made as the chain makes them."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage

from elmd_sdk.chains.context import own_model
from elmd_sdk.errors import ElmdError, InputError
from elmd_sdk.models.closed_set import batch_log_prior, emotion_choice

CONTENT_FREE = ("N/A", "[MASK]")  # content-free utterances of contextual calibration (Zhao et al., 2021)


def label_log_probs(
    chat_model: BaseChatModel, messages: Sequence[BaseMessage], labels: Sequence[str], language: str
) -> list[float]:
    """log p(e | prompt) of every label of ``labels``, uncalibrated, for one prompt (its answer lines scored by the
    chat model's closed-set scorer; nothing decoded)."""
    own = own_model(chat_model)
    if own is None:
        raise ElmdError("emotion calibration scores the labels with an ELMDChatModel")
    [scored] = own.score_answers([(messages, emotion_choice(labels, language).lines)])
    return torch.log_softmax(scored.log_likelihoods.double(), dim=-1).tolist()


def mean_log_prior(rows: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """Contextual calibration's prior: each label's mean log-probability over the content-free prompts ``rows``."""
    return tuple(sum(values) / len(values) for values in zip(*rows, strict=True))


def fitted_log_prior(rows: Sequence[Sequence[float]]) -> tuple[float, ...]:
    """Batch calibration's prior: the log of each label's mean probability over the prompts ``rows``."""
    if not rows:
        raise InputError("no inputs to fit the emotion prior on", field="inputs")
    return batch_log_prior(torch.tensor(rows))  # log-probabilities are log-likelihoods up to a constant
