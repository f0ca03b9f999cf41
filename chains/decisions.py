"""``ELMDDecisions``: the OpenAI Decisions API as a LangChain Runnable over an :class:`ELMDChain`. A request (the wire
shape of :mod:`~elmd_sdk.chains.decision_types`, as a dict, or a :class:`DecisionRequest`) goes in, a
:class:`Decision` (its answers in question order, each with a probability for every option) comes out; nothing is
generated. ``elmd-sdk serve`` answers ``POST /v1/decisions`` with it.

How a question is answered:

- **The emotion questions, the ELMD way.** A choice question named ``utterance_emotion`` or ``response_emotion``
  whose options are all among the bundle's emotion labels is answered as a chat reply to the same input would carry
  it (:mod:`~elmd_sdk.chains.emotions`): ``utterance_emotion`` is the retrieval vote of the ``emotion_vote_k`` nearest
  indexed utterances (the reply's ``utterance_emotion_scores``), ``response_emotion`` the closed-set scores of the
  reply's emotion line after the six-part prompt, with the bundle's calibration (the reply's ``emotion_scores``). The
  input maps onto a turn as a chat request does: the last message is the utterance and must be the user's, the user
  and assistant messages before it the history, system and developer messages the background. Options that are a
  part of the labels restrict the choice as a chat request's ``allowed_emotions`` does (``utterance_emotion``: the
  vote renormalised over them). The question's instructions are not used: the ELMD prompt is the question.
- **Any other question** is scored by the LLM: the input and the question rendered with the chat template
  (:mod:`~elmd_sdk.chains.decision_prompt`), every option's answer line scored by its log-likelihood in one batched
  pass over the prompt's KV cache (:meth:`ELMDChatModel.score_answers`, the chat model's closed-set scorer); a
  predicate's options are yes and no, a score's its levels. ``length_normalisation`` divides each option's
  log-likelihood by its token count (``mean``) or not (``sum``). ``calibration`` divides the probabilities by the
  model's prior for the question: the exponent of each option's mean log-probability for the content-free inputs
  "N/A" and "[MASK]" in the input's place (contextual calibration, Zhao et al. 2021, as the chain calibrates its labels;
  computed once per question and kept). A score is the expected level index; a confidence is one minus the
  distribution's entropy over its largest value (1: all mass on one option, 0: uniform).

A question is refused (``{"type": "refusal", "name", "reason"}``, the other questions still answered) when: an
emotion question's input does not end with a user message (there is no utterance to judge); ``utterance_emotion`` has
no vote (the chain has no retrieval, or no neighbour has one of the options); ``response_emotion``'s options are none
of the labels the chain may answer with, or its prompt does not fit the model's context window even without the
history; the prompt of another question, with its longest answer line, does not fit the context window.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from langchain_core.callbacks import CallbackManagerForChainRun
from langchain_core.runnables import RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import patch_config
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from elmd_sdk.answer.result import ELMDResult
from elmd_sdk.chains.calibration import CONTENT_FREE, mean_log_prior
from elmd_sdk.chains.chain import ELMDChain
from elmd_sdk.chains.context import context_window, own_model
from elmd_sdk.chains.decision_prompt import question_prompt, render_input
from elmd_sdk.chains.decision_types import (
    Answer,
    ChoiceAnswer,
    ChoiceProbability,
    ChoiceQuestion,
    Decision,
    DecisionLimits,
    DecisionRequest,
    InputMessage,
    PredicateAnswer,
    PredicateQuestion,
    Question,
    RefusalAnswer,
    ScoreAnswer,
    ScoreProbability,
    Usage,
    parse_request,
)
from elmd_sdk.chains.emotions import reply_emotions, utterance_emotions
from elmd_sdk.errors import ElmdError, InputError
from elmd_sdk.models.option_scoring import LengthNormalisation, OptionScores

EMOTION_QUESTIONS = ("utterance_emotion", "response_emotion")
"""Names of the choice questions answered the ELMD way (when their options are among the bundle's labels)."""
PRIOR_CACHE_SIZE = 256
"""Questions whose calibration prior is kept."""


class ELMDDecisions(RunnableSerializable[Mapping[str, Any] | DecisionRequest, Decision]):
    """Typed answers to closed questions about a text or a conversation, from an ELMD bundle (module docstring)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    chain: ELMDChain
    """The chain whose chat model scores the options and whose retrieval and prompt answer the emotion questions."""
    model: str = "default"
    """The model id the answers carry (a request naming another is refused); the server's is the bundle's id."""
    limits: DecisionLimits = Field(default_factory=DecisionLimits)
    """How many questions and options, and how much input, a request may hold."""
    length_normalisation: LengthNormalisation = "mean"
    """How the log-likelihoods of options of different token counts compare (README "Decisions" for the measure)."""
    calibration: bool = True
    """Contextual calibration of the questions the LLM answers (module docstring)."""

    _priors: OrderedDict[tuple[Any, ...], tuple[float, ...]] = PrivateAttr(default_factory=OrderedDict)
    _priors_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def get_input_schema(self, config: RunnableConfig | None = None) -> type[BaseModel]:
        return DecisionRequest

    @property
    def OutputType(self) -> type[Decision]:
        return Decision

    def invoke(
        self, input: Mapping[str, Any] | DecisionRequest, config: RunnableConfig | None = None, **kwargs: Any
    ) -> Decision:
        """Answer one request: ``{"input": text or messages, "questions": [...], "model": optional}``."""
        return self._call_with_config(self._decide, input, config, **kwargs)

    def is_emotion_question(self, question: Question) -> bool:
        """Whether ``question`` is answered the ELMD way (module docstring)."""
        return (
            isinstance(question, ChoiceQuestion)
            and question.name in EMOTION_QUESTIONS
            and all(isinstance(c.value, str) and c.value in self.chain.labels for c in question.choices)
        )

    def _decide(
        self,
        input: Mapping[str, Any] | DecisionRequest,
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
    ) -> Decision:
        request = parse_request(input, self.limits)
        if request.model is not None and request.model != self.model:
            raise InputError(f"no model {request.model!r}; this is {self.model!r}", field="model")
        child = patch_config(config, callbacks=run_manager.get_child())
        questions = dict(enumerate(request.questions))
        emotional = {
            i: q for i, q in questions.items() if isinstance(q, ChoiceQuestion) and self.is_emotion_question(q)
        }
        others = {i: q for i, q in questions.items() if i not in emotional}
        answers, tokens = self._emotion_answers(request.input, emotional, child) if emotional else ({}, 0)
        if others:
            scored, more = self._scored_answers(request.input, others)
            answers, tokens = {**answers, **scored}, tokens + more
        usage = Usage(input_tokens=tokens, total_tokens=tokens)
        return Decision(answers=[answers[i] for i in questions], model=self.model, usage=usage)

    # -- the emotion questions --------------------------------------------------------------------------------------

    def _emotion_answers(
        self, value: str | Sequence[InputMessage], questions: Mapping[int, ChoiceQuestion], config: RunnableConfig
    ) -> tuple[dict[int, Answer], int]:
        turn = conversation_turn(value)
        if isinstance(turn, str):
            return {i: RefusalAnswer(name=q.name, reason=turn) for i, q in questions.items()}, 0
        answers: dict[int, Answer] = {}
        options = {i: [str(c.value) for c in q.choices] for i, q in questions.items()}
        replies: dict[tuple[str, ...] | None, ELMDResult | str] = {}  # by the labels allowed: the result, or why none
        for i in (i for i, q in questions.items() if q.name == "response_emotion"):
            allowed = None if set(options[i]) == set(self.chain.labels) else tuple(options[i])
            if allowed not in replies:
                replies[allowed] = self._reply(turn, allowed, config)
            reply = replies[allowed]
            if isinstance(reply, str):
                answers[i] = RefusalAnswer(name=questions[i].name, reason=reply)
            else:
                assert reply.emotion_scores is not None
                answers[i] = choice_answer(questions[i], [reply.emotion_scores[v] for v in options[i]])
        found = [reply for reply in replies.values() if isinstance(reply, ELMDResult)]
        voted, vote = bool(found), found[0].utterance_emotion_scores if found else None
        for i in (i for i, q in questions.items() if q.name == "utterance_emotion"):
            if not voted:
                voted, vote = True, utterance_emotions(self.chain, turn, config).utterance_emotion_scores
            total = sum(vote[v] for v in options[i]) if vote is not None else 0.0
            if vote is None or total <= 0:
                reason = "no retrieval" if vote is None else "no retrieved neighbour has one of these emotions"
                answers[i] = RefusalAnswer(name=questions[i].name, reason=f"{reason}: the utterance emotion is a vote")
            else:
                answers[i] = choice_answer(questions[i], [vote[v] / total for v in options[i]])
        return answers, sum((reply.usage or {}).get("input_tokens", 0) for reply in found)

    def _reply(self, turn: dict[str, Any], allowed: tuple[str, ...] | None, config: RunnableConfig) -> ELMDResult | str:
        """The reply's emotions, with ``allowed`` labels only; a refusal's reason when the chain allows none."""
        try:
            return reply_emotions(self.chain, {**turn, "allowed_emotions": allowed}, config)
        except InputError as error:
            if error.field == "allowed_emotions":
                return f"this model answers with none of these emotions ({error.problem})"
            if error.field == "utterance":  # its prompt does not fit the context, even without the history
                return error.problem
            raise

    # -- questions scored by the LLM --------------------------------------------------------------------------------

    def _scored_answers(
        self, value: str | Sequence[InputMessage], questions: Mapping[int, Question]
    ) -> tuple[dict[int, Answer], int]:
        own = own_model(self.chain.chat_model)
        if own is None:
            raise ElmdError("decisions score the options with an ELMDChatModel")
        language, how = self.chain.language, self.length_normalisation
        rendered = render_input(value, language)
        form = "text" if isinstance(value, str) else "conversation"
        window = context_window(self.chain.chat_model, self.chain.context_window)
        answers: dict[int, Answer] = {}
        prompts = {}
        for i, question in questions.items():
            messages, lines = question_prompt(rendered, question, language)
            need = own.count_prompt_tokens(messages) + max(len(own.get_token_ids(line)) for line in lines)
            if window is not None and need > window:
                reason = f"the input and this question take {need} tokens; the model's context holds {window}"
                answers[i] = RefusalAnswer(name=question.name, reason=reason)
            else:
                prompts[i] = (messages, lines)
        keys = {i: (how, form, questions[i].model_copy(update={"name": None}).model_dump_json()) for i in prompts}
        with self._priors_lock:
            priors = {i: self._priors.get(keys[i]) for i in prompts} if self.calibration else {}
        missing = [i for i in prompts if self.calibration and priors[i] is None]
        free = [render_input(text if form == "text" else [InputMessage(role="user", content=text)], language)
                for text in CONTENT_FREE]  # fmt: skip
        batch = [*prompts.values(), *(question_prompt(f, questions[i], language) for i in missing for f in free)]
        scores = own.score_answers(batch)
        for n, i in enumerate(missing):
            priors[i] = prior = content_free_prior(scores[len(prompts) + n * len(free) :][: len(free)], how)
            self._keep_prior(keys[i], prior)
        for i, scored in zip(prompts, scores, strict=False):
            answers[i] = answer(questions[i], option_probabilities(scored, how, priors.get(i)))
        return answers, sum(scored.prompt_tokens for scored in scores[: len(prompts)])

    def _keep_prior(self, key: tuple[Any, ...], prior: tuple[float, ...]) -> None:
        with self._priors_lock:
            self._priors[key] = prior
            self._priors.move_to_end(key)
            while len(self._priors) > PRIOR_CACHE_SIZE:
                self._priors.popitem(last=False)


def content_free_prior(rows: Sequence[OptionScores], how: LengthNormalisation) -> tuple[float, ...]:
    """Contextual calibration's prior of a question: each option's mean log-probability over the question's prompts
    with a content-free input (``rows``), under the length normalisation ``how``."""
    return mean_log_prior([row.normalised(how).log_softmax(-1).tolist() for row in rows])


def option_probabilities(
    scored: OptionScores, how: LengthNormalisation, prior: Sequence[float] | None = None
) -> list[float]:
    """The options' probabilities: the softmax of their length-normalised log-likelihoods, minus the prior when
    calibrated."""
    logits = scored.normalised(how)
    if prior is not None:
        logits = logits - torch.tensor(prior)
    return torch.softmax(logits, -1).tolist()


def conversation_turn(value: str | Sequence[InputMessage]) -> dict[str, Any] | str:
    """The chain input (utterance, history, background) of a decision's input, as a chat request maps its messages;
    or, when the input has no utterance, why (the emotion questions' refusal)."""
    if isinstance(value, str):
        return {"utterance": value}
    turns = [m for m in value if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user" or not turns[-1].content.strip():
        return "the input does not end with a user message: there is no utterance whose emotion to judge"
    background = "\n".join(m.content.strip() for m in value if m.role in ("system", "developer") and m.content.strip())
    history = [{"role": m.role, "content": m.content} for m in turns[:-1]]
    return {"utterance": turns[-1].content, "history": history, "background": background or None}


def answer(question: Question, probabilities: Sequence[float]) -> Answer:
    """The typed answer of a question from its options' probabilities (in the question's order)."""
    if isinstance(question, PredicateQuestion):
        return PredicateAnswer(name=question.name, probability=probabilities[0])  # options: yes, no
    if isinstance(question, ChoiceQuestion):
        return choice_answer(question, probabilities)
    return ScoreAnswer(
        name=question.name,
        score=sum(i * p for i, p in enumerate(probabilities)),
        confidence=confidence(probabilities),
        probabilities=[
            ScoreProbability(label=level.label, value=i, probability=p)
            for i, (level, p) in enumerate(zip(question.levels, probabilities, strict=True))
        ],
    )


def choice_answer(question: ChoiceQuestion, probabilities: Sequence[float]) -> ChoiceAnswer:
    """A choice's answer: the most probable option (the first of equals), every option's probability."""
    best = max(range(len(probabilities)), key=probabilities.__getitem__)
    return ChoiceAnswer(
        name=question.name,
        choice=question.choices[best].value,
        confidence=confidence(probabilities),
        probabilities=[
            ChoiceProbability(value=c.value, probability=p)
            for c, p in zip(question.choices, probabilities, strict=True)
        ],
    )


def confidence(probabilities: Sequence[float]) -> float:
    """One minus the entropy of ``probabilities`` over its largest value, log n: 1 when one option has all of it, 0
    when they are uniform."""
    entropy = -sum(p * math.log(p) for p in probabilities if p > 0)
    return max(0.0, 1.0 - entropy / math.log(len(probabilities)))


__all__ = [
    "EMOTION_QUESTIONS",
    "ELMDDecisions",
    "answer",
    "confidence",
    "content_free_prior",
    "conversation_turn",
    "option_probabilities",
]
