"""How the chain holds a conversation: every setting a bundle may record in its ``chain`` block (``bundle.json``)
and :class:`~elmd_sdk.chains.chain.ELMDChain` takes as a field, with its one default. ``from_bundle`` reads the
block; chat, serve, eval and the Python chain therefore apply the same rules."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from elmd_sdk.chains.fusion import EmotionFusion
from elmd_sdk.chains.prompt import DemonstrationForm
from elmd_sdk.chains.vote_calibration import VoteCalibration
from elmd_sdk.errors import InputError, input_error


class ChainFields(BaseModel):
    """The conversation settings (the fields :class:`ChainSettings` and the chain share)."""

    emotion_mode: Literal["closed", "free"] = "closed"
    """closed: the emotion is chosen among the labels by the likelihood of their answer lines, then forced, and the
    result carries every label's probability (needs an ``ELMDChatModel``); free: the model writes the emotion line
    itself and the parser reads it (the paper's decoding)."""
    allowed_emotions: tuple[str, ...] | None = None
    """Restrict every reply's emotion to these labels (an input's ``allowed_emotions`` narrows it further, never
    widens it: a chain that never answers in anger stays so whatever its input asks)."""
    copy_guard: bool = True
    """Forbid the reply from reproducing any token n-gram of the demonstration's r' or of the utterance u (small
    models otherwise repeat one of them; ``ELMDChatModel`` only; n is its ``copy_guard_ngram``, 4 by default)."""
    copy_guard_own_replies: bool = True
    """With ``copy_guard``: also forbid the n-grams of the assistant's own earlier replies in the history the prompt
    holds, so that a conversation does not repeat itself from the third turn on (``benchmarks/conversation.py``)."""
    emotion_vote_k: int = Field(default=10, ge=1)
    """Nearest indexed utterances whose emotions vote, weighted by similarity, for the utterance emotion."""
    utterance_calibration: VoteCalibration | None = None
    """The fitted recalibration of that vote (``elmd-sdk calibrate`` fits and records it): ``utterance_emotion_scores``
    are then probabilities an app can threshold, and ``utterance_emotion`` the most probable label. None: the raw
    vote."""
    emotion_calibration: bool = True
    """Closed set: divide the label probabilities by the model's prior, so the choice follows the input, not the
    model's bias: ``emotion_log_prior`` when set, else the prior for content-free inputs ("N/A", "[MASK]";
    contextual calibration), computed once per chain."""
    demonstration_form: DemonstrationForm = "exchange"
    """How R enters the prompt: ``exchange`` (u' with the special instruction answered with e' and r') or ``paper``
    (r' with the special instruction only, paper 3.3); the README gives the measured reason for the default."""
    demonstration_min_score: float | None = Field(default=None, allow_inf_nan=False)
    """The nearest pair becomes the demonstration R only when its retrieval ``score`` (0: as similar as two random
    utterances of the corpus, 1: identical) is at least this; a pair too far from the utterance to help is left
    out (its vote still counts). None: always the nearest."""
    demonstration_min_topic: float | None = Field(default=None, ge=-1.0, le=1.0)
    """With it, R is the retrieved pair (of the ``emotion_vote_k`` nearest) whose u' is closest in topic to u, the
    cosine of the retriever's sentence embeddings (``EmotionalRetriever.topic_similarities``), when that is at least
    this; no pair that close: no demonstration. None: the nearest pair (the paper's)."""
    max_history_turns: int | None = Field(default=None, ge=0)
    """Most history turns the prompt holds (the newest; fewer when the context is full). None: as many as fit."""
    emotion_source: Literal["llm", "fused"] = "llm"
    """llm: the response emotion is the LLM's calibrated closed-set choice (the paper's); fused: combined with the
    user's recognised emotion and the retrieved pairs' response emotions by ``emotion_fusion``."""
    emotion_fusion: EmotionFusion | None = None
    """The fitted weights of the fused emotion (``elmd-sdk calibrate`` fits and records them)."""


class ChainSettings(ChainFields):
    """A bundle's ``chain`` block, checked."""

    model_config = ConfigDict(extra="forbid", frozen=True)


CHAIN_SETTINGS: tuple[str, ...] = tuple(ChainFields.model_fields)


def check_chain_settings(values: Mapping[str, Any], *, file: str | Path | None = None) -> dict[str, Any]:
    """``values`` checked as chain settings (an :class:`InputError` names ``file`` and ``chain.<setting>``)."""
    try:
        ChainSettings.model_validate(dict(values))
    except ValidationError as error:
        bad = input_error(error)
        raise InputError(bad.problem, file=file, field=f"chain.{bad.field}") from None
    return dict(values)
