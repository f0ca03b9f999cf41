"""A turn's emotions without its reply: the utterance emotion (the retrieval vote) and the probabilities of the reply's
emotion (the closed-set scoring of its emotion line), computed by the chain's own steps (input checking, retrieval,
the fitted six-part prompt, the calibration prior), so they equal what :meth:`ELMDChain.invoke` reports for the same
input, but with nothing decoded. :meth:`ELMDChain.emotion_scores` and the ``utterance_emotion`` and
``response_emotion`` decisions (:mod:`~elmd_sdk.chains.decisions`) are these.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import ensure_config

from elmd_sdk.answer.result import ELMDResult
from elmd_sdk.chains.context import own_model
from elmd_sdk.chains.input import parse_input
from elmd_sdk.chains.reply import Retrieved
from elmd_sdk.errors import ElmdError
from elmd_sdk.models.closed_set import emotion_choice, emotion_probabilities, pick_emotion

if TYPE_CHECKING:
    from elmd_sdk.chains.chain import ELMDChain


def utterance_emotions(chain: ELMDChain, input: Mapping[str, Any] | str, config: RunnableConfig | None) -> Retrieved:
    """What retrieval gives the turn: the demonstration and the utterance-emotion vote (None without retrieval)."""
    return chain._retrieve(parse_input(input, chain.language, chain.labels), ensure_config(config))


def reply_emotions(chain: ELMDChain, input: Mapping[str, Any] | str, config: RunnableConfig | None) -> ELMDResult:
    """The turn's emotions without the reply: ``emotion_scores`` (the closed-set choice of the reply's emotion, also
    for a chain in free mode), ``emotion`` (the most likely label, or the forced one), the utterance emotion and the
    prompt's token count as ``usage``."""
    own = own_model(chain.chat_model)
    if own is None:
        raise ElmdError("the reply's emotion scores come from an ELMDChatModel's closed-set scoring")
    turn = parse_input(input, chain.language, chain.labels)
    found = chain._retrieve(turn, ensure_config(config))
    messages, history = chain._fitted_prompt(turn, found.demonstration)
    choice = chain._reply_chunks(turn, found, history).options.get("emotion_choice")
    if choice is None:  # free mode: the choice closed mode would make
        choice = replace(emotion_choice(chain.labels, chain.language), log_prior=chain._emotion_log_prior())
    [scored] = own.score_answers([(messages, choice.lines)])
    probabilities = emotion_probabilities(choice, scored.log_likelihoods)
    return ELMDResult(
        pick_emotion(choice, probabilities, do_sample=False, generator=None),
        "",
        demonstration=found.demonstration,
        emotion_scores=probabilities,
        utterance_emotion=found.utterance_emotion,
        utterance_emotion_scores=found.utterance_emotion_scores,
        usage={"input_tokens": scored.prompt_tokens, "output_tokens": 0, "total_tokens": scored.prompt_tokens},
    )
