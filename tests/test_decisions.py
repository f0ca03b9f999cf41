"""Decisions in Python (``ELMDDecisions``): request checking, the answers' math (hand-computed), calibration, the
emotion questions equal to the chain's reply, refusals, and the closed-set scorer's batched path."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from typing import Any

import pytest
import torch
from chain_fakes import FixedRetriever, tiny_chat
from langchain_core.messages import BaseMessage
from pydantic import Field
from tolerances import SAME_MATH

from elmd_sdk.chains.chain import ELMDChain
from elmd_sdk.chains.decision_types import DecisionLimits, DecisionRequest, parse_request
from elmd_sdk.chains.decisions import ELMDDecisions, confidence, conversation_turn
from elmd_sdk.errors import InputError
from elmd_sdk.models.chat_model import ELMDChatModel
from elmd_sdk.models.option_scoring import OptionScores

CONVERSATION = [
    {"role": "system", "content": "Two friends at a party."},
    {"role": "user", "content": "Guess what?"},
    {"role": "assistant", "content": "What?"},
    {
        "role": "user",
        "content": [{"type": "input_text", "text": "I finally "}, {"type": "input_text", "text": "got the job!"}],
    },
]
TURN = {
    "utterance": "I finally got the job!",
    "history": [{"role": "user", "content": "Guess what?"}, {"role": "assistant", "content": "What?"}],
    "background": "Two friends at a party.",
}


def emotion_question(name: str, labels: Sequence[str]) -> dict[str, Any]:
    return {"type": "choice", "name": name, "instructions": "-", "choices": [{"value": label} for label in labels]}


@pytest.fixture(scope="module")
def chain() -> ELMDChain:
    return ELMDChain(chat_model=tiny_chat(max_new_tokens=16), retriever=FixedRetriever())


@pytest.fixture(scope="module")
def decisions(chain: ELMDChain) -> ELMDDecisions:
    return ELMDDecisions(chain=chain)


# -- the request ----------------------------------------------------------------------------------------------------


def test_a_request_is_normalised() -> None:
    request = parse_request(
        {
            "model": "default",
            "input": CONVERSATION,
            "questions": [
                {"type": "predicate", "name": "p", "instructions": [{"type": "input_text", "text": " Urgent? "}]},
                {
                    "type": "choice",
                    "instructions": "Team?",
                    "choices": [{"value": "a", "description": "A."}, {"value": True}],
                },
                {"type": "score", "instructions": "Joy?", "levels": [{"label": "low"}, {"label": "high"}]},
            ],
            "prompt_cache_key": "ignored",
        },
        DecisionLimits(),
    )
    assert [(m.role, m.content) for m in request.input] == [
        ("system", "Two friends at a party."), ("user", "Guess what?"), ("assistant", "What?"),
        ("user", "I finally got the job!")]  # fmt: skip
    assert request.questions[0].instructions == "Urgent?" and request.questions[0].name == "p"
    assert request.questions[1].choices[1].value is True and request.questions[1].name is None
    assert parse_request(request, DecisionLimits()) == request  # a built request passes as it is


def test_json_parts_and_langchains_json_conversation() -> None:
    data = {"input": [{"role": "user", "content": [{"type": "input_json", "data": {"a": [1, "é"]}}]}],
            "questions": [{"type": "predicate", "instructions": "x"}]}  # fmt: skip
    assert parse_request(data, DecisionLimits()).input[0].content == '{"a":[1,"é"]}'
    sent = json.dumps([{"role": "system", "content": "B"}, {"role": "user", "content": "hi"},
                       {"role": "assistant", "content": "yo"}])  # fmt: skip
    request = parse_request({**data, "input": [{"role": "user", "content": sent}]}, DecisionLimits())
    assert [(m.role, m.content) for m in request.input] == [("system", "B"), ("user", "hi"), ("assistant", "yo")]
    other = '[{"role": "tool", "content": "x"}]'  # not a conversation: kept as the text it is
    assert (
        parse_request({**data, "input": [{"role": "user", "content": other}]}, DecisionLimits()).input[0].content
        == other
    )


LIMITS = DecisionLimits(max_questions=2, max_options=3, max_input_messages=2, max_input_chars=20, max_question_chars=30)
Q = {"type": "predicate", "instructions": "x"}


def asking(*questions: dict[str, Any], input: Any = "hi", **fields: Any) -> dict[str, Any]:
    return {"input": input, "questions": list(questions), **fields}


def choice(*values: Any) -> dict[str, Any]:
    return {"type": "choice", "instructions": "x", "choices": [{"value": value} for value in values]}


def score(*labels: str) -> dict[str, Any]:
    return {"type": "score", "instructions": "x", "levels": [{"label": label} for label in labels]}


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (asking(choice("a")), "questions[0].choices", "at least two options, got 1"),
        (asking(choice("a", "a")), "questions[0].choices", "duplicate"),
        (asking(choice("true", True)), "questions[0].choices", "duplicate"),
        (asking(score("0", "1", "2", "3")), "questions[0].levels", "at most 3 options"),
        (asking(Q, Q, Q), "questions", "at most 2 questions"),
        (asking(Q, input="x" * 21), "input", "at most 20 characters"),
        (asking(Q, input=[{"role": "user", "content": "a"}] * 3), "input", "at most 2 messages"),
        (asking({"type": "predicate", "instructions": "x" * 31}), "questions[0]", "at most 30"),
        (asking({"type": "rank", "instructions": "x"}), "questions[0].type", "unknown question type"),
        (asking(Q, input="  "), "input", "empty"),
        (asking(Q, input=[{"role": "system", "content": " "}]), "input", "empty"),
        (asking(), "questions", "at least one"),
        ({"input": "hi"}, "questions", "required"),
        ({"questions": [Q]}, "input", "required"),
        (asking(Q, input=[{"role": "tool", "content": "x"}]), "input[0].role", "role must be"),
        (asking(Q, input=[{"type": "function_call", "call_id": "1", "name": "f", "arguments": "{}"}]), "input[0].type",
         "unsupported input item type"),
        (asking(Q, input=[{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}]),
         "input[0].content[0]", "images"),
        (asking(choice("a", 3)), "questions[0].choices[1].value", "string or a boolean"),
        (asking(score("a", "b\nc")), "questions[0].levels[1].label", "one non-empty line"),
        (asking(choice(" a", "b")), "questions[0].choices[0].value", "one non-empty line"),
        (asking({**Q, "choices": []}), "questions[0].choices", "unknown field"),
        (asking(Q, model=3), "model", "string"),
    ],
)  # fmt: skip
def test_bad_requests_name_the_field(body: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(InputError) as refused:
        parse_request(body, LIMITS)
    assert refused.value.field == field and words in refused.value.problem


def test_limits_take_exactly_their_value() -> None:
    at = {"input": "x" * 20, "questions": [{"type": "score", "instructions": "x", "levels": [{"label": "a"},
          {"label": "b"}, {"label": "c"}]}, Q]}  # fmt: skip
    assert len(parse_request(at, LIMITS).questions) == 2


# -- the answers' math ------------------------------------------------------------------------------------------------


def test_confidence_is_one_minus_the_normalised_entropy() -> None:
    assert confidence([1.0, 0.0]) == 1.0 and confidence([0.25] * 4) == pytest.approx(0.0, abs=1e-12)
    expected = 1 - (0.5 * math.log(2) + 0.5 * math.log(4)) / math.log(3)  # H(0.5, 0.25, 0.25) / log 3
    assert confidence([0.5, 0.25, 0.25]) == pytest.approx(expected)


def test_length_normalisation() -> None:
    scores = OptionScores([[1, 2], [3]], torch.tensor([-4.0, -3.0]), 10)
    assert scores.normalised("sum").tolist() == [-4.0, -3.0] and scores.normalised("mean").tolist() == [-2.0, -3.0]


class ScriptedChat(ELMDChatModel):
    """The tiny chat model whose answer lines have fixed log-likelihoods: by the input the prompt holds (N/A and
    [MASK] are calibration's content-free inputs), each line's rest one token long unless ``rests`` says otherwise."""

    table: dict[str, list[float]] = Field(default_factory=dict)
    rests: list[int] | None = None
    calls: list[int] = Field(default_factory=list)

    def score_answers(self, prompts: Sequence[tuple[Sequence[BaseMessage], Sequence[str]]]) -> list[OptionScores]:
        self.calls.append(len(prompts))
        out = []
        for messages, lines in prompts:
            text = str(messages[-1].content)
            key = next(k for k in self.table if f"\n{k}\n" in text)
            rests = [[0] * n for n in (self.rests or [1] * len(lines))]
            out.append(OptionScores(rests, torch.tensor(self.table[key]), 7))
        return out


def scripted(table: dict[str, list[float]], rests: list[int] | None = None, **options: Any) -> ELMDDecisions:
    chat = tiny_chat()
    model = ScriptedChat(hf_model=chat.hf_model, tokenizer=chat.tokenizer, table=table, rests=rests, calls=[])
    return ELMDDecisions(chain=ELMDChain(chat_model=model, retriever=FixedRetriever()), **options)


def test_a_predicate_is_calibrated_by_the_content_free_inputs() -> None:
    decide = scripted({"real": [-1.0, -2.0], "N/A": [-1.0, -3.0], "[MASK]": [-1.0, -1.0]})
    request = {"input": "real", "questions": [{"type": "predicate", "name": "p", "instructions": "?"}]}
    # prior = mean(log_softmax([-1, -3]), log_softmax([-1, -1])) = [-0.41, -1.41]; [-1, -2] - prior = [-0.59, -0.59]
    [answer] = decide.invoke(request).answers
    assert answer.probability == pytest.approx(0.5, abs=1e-6)
    plain = decide.model_copy(update={"calibration": False})
    assert plain.invoke(request).answers[0].probability == pytest.approx(1 / (1 + math.exp(-1)))  # softmax(-1, -2)
    calls = decide.chain.chat_model.calls
    decide.invoke(request)
    assert calls[-1] == 1  # the question's prior is kept: only the question itself is scored again


def test_choice_and_score_answers_and_length_normalisation() -> None:
    table = {"real": [-4.0, -3.0, -6.0], "N/A": [0.0, 0.0, 0.0], "[MASK]": [0.0, 0.0, 0.0]}
    choice = {"type": "choice", "name": "c", "instructions": "?", "choices": [{"value": v} for v in ("a", "b", True)]}
    score = {"type": "score", "name": "s", "instructions": "?", "levels": [{"label": v} for v in ("lo", "mid", "hi")]}
    request = {"input": "real", "questions": [choice, score]}
    mean = scripted(table, rests=[2, 1, 3]).invoke(request)  # per token: [-2, -3, -2]
    e = math.exp(-1)
    p = [1 / (2 + e), e / (2 + e), 1 / (2 + e)]
    c, s = mean.answers
    assert c.type == "choice" and c.name == "c" and c.choice == "a"  # the first of equals
    assert [(x.value, x.probability) for x in c.probabilities] == [("a", pytest.approx(p[0])),
        ("b", pytest.approx(p[1])), (True, pytest.approx(p[2]))]  # fmt: skip
    assert c.confidence == pytest.approx(confidence(p))
    assert s.type == "score" and s.score == pytest.approx(p[1] + 2 * p[2])
    assert [(x.label, x.value) for x in s.probabilities] == [("lo", 0), ("mid", 1), ("hi", 2)]
    total = scripted(table, rests=[2, 1, 3], length_normalisation="sum").invoke(request)
    assert total.answers[0].choice == "b"  # [-4, -3, -6] without normalisation
    assert total.usage.input_tokens == 2 * 7 and total.usage.total_tokens == 14 and total.usage.output_tokens == 0


def test_a_question_too_long_for_the_context_is_refused_and_the_others_answered(chain: ELMDChain) -> None:
    from elmd_sdk.chains.decision_prompt import question_prompt, render_input
    from elmd_sdk.chains.decision_types import PredicateQuestion

    long = {"type": "predicate", "name": "long", "instructions": "Is it so? " * 30}
    short = {"type": "predicate", "name": "ok", "instructions": "?"}
    need = [chain.count_tokens(question_prompt(render_input("hi", "en"), PredicateQuestion(**q), "en")[0])
            for q in (long, short)]  # fmt: skip
    window = need[1] + 10  # room for the short question and its longest answer line, not for the long one
    assert need[0] > window
    answers = ELMDDecisions(chain=chain.model_copy(update={"context_window": window})).invoke(
        {"input": "hi", "questions": [long, short]}
    )
    assert answers.answers[0].type == "refusal" and f"context holds {window}" in answers.answers[0].reason
    assert answers.answers[1].type == "predicate" and 0 < answers.answers[1].probability < 1


# -- the emotion questions --------------------------------------------------------------------------------------------


def test_the_emotion_questions_equal_the_chains_reply(chain: ELMDChain, decisions: ELMDDecisions) -> None:
    labels = list(chain.labels)
    shuffled = labels[::-1]
    decision = decisions.invoke({"input": CONVERSATION, "questions": [emotion_question("response_emotion", shuffled),
                                 emotion_question("utterance_emotion", labels)]})  # fmt: skip
    reply = chain.invoke(TURN)
    response, utterance = decision.answers
    assert {p.value: p.probability for p in response.probabilities} == pytest.approx(
        reply.emotion_scores, abs=SAME_MATH, rel=SAME_MATH
    )
    assert [p.value for p in response.probabilities] == shuffled  # in the question's order
    assert {p.value: p.probability for p in utterance.probabilities} == reply.utterance_emotion_scores
    assert utterance.choice == reply.utterance_emotion == "happy"
    assert decision.usage.input_tokens == reply.usage["input_tokens"]  # the prompt scored is the reply's
    assert chain.emotion_scores(TURN).emotion_scores == pytest.approx(
        reply.emotion_scores, abs=SAME_MATH, rel=SAME_MATH
    )


def test_emotion_options_that_are_some_labels_act_as_allowed_emotions(
    chain: ELMDChain, decisions: ELMDDecisions
) -> None:
    some = ["sad", "anger", "happy"]
    questions = [emotion_question("response_emotion", some), emotion_question("utterance_emotion", ["sad", "anger"])]
    decision = decisions.invoke({"input": "I finally got the job!", "questions": questions})
    reply = chain.invoke({"utterance": "I finally got the job!", "allowed_emotions": some})
    assert [p.probability for p in decision.answers[0].probabilities] == pytest.approx(
        [reply.emotion_scores[label] for label in some], abs=SAME_MATH, rel=SAME_MATH
    )
    refusal = decision.answers[1]  # the only neighbour votes happy
    assert (
        refusal.type == "refusal" and refusal.name == "utterance_emotion" and "no retrieved neighbour" in refusal.reason
    )


def test_emotion_refusals(chain: ELMDChain) -> None:
    labels = list(chain.labels)
    questions = [emotion_question("response_emotion", labels), emotion_question("utterance_emotion", labels)]
    ended = ELMDDecisions(chain=chain).invoke({"input": CONVERSATION[:3], "questions": questions})
    assert {a.type for a in ended.answers} == {"refusal"} and "does not end with a user message" in ended.answers[
        0
    ].reason
    bare = ELMDDecisions(chain=chain.model_copy(update={"use_retrieval": False})).invoke(
        {"input": "hi", "questions": questions}
    )
    assert (
        bare.answers[0].type == "choice"
        and bare.answers[1].type == "refusal"
        and "no retrieval" in bare.answers[1].reason
    )
    narrow = ELMDDecisions(chain=chain.model_copy(update={"allowed_emotions": ("happy", "sad")}))
    none = narrow.invoke({"input": "hi", "questions": [emotion_question("response_emotion", ["anger", "fear"])]})
    assert none.answers[0].type == "refusal" and "none of these emotions" in none.answers[0].reason
    other = emotion_question("mood", labels)  # another name: an ordinary choice question, scored by the LLM
    assert ELMDDecisions(chain=chain).invoke({"input": "hi", "questions": [other]}).answers[0].type == "choice"


def test_conversation_turn_maps_as_a_chat_request() -> None:
    request = parse_request({"input": CONVERSATION, "questions": [Q]}, DecisionLimits())
    assert conversation_turn(request.input) == TURN
    assert conversation_turn("hello") == {"utterance": "hello"}


def test_the_answers_validate_as_the_openai_packages_decision(decisions: ELMDDecisions, chain: ELMDChain) -> None:
    openai = pytest.importorskip("openai")
    questions = [Q, {"type": "choice", "instructions": "?", "choices": [{"value": "a"}, {"value": False}]},
                 {"type": "score", "instructions": "?", "levels": [{"label": "a"}, {"label": "b"}]},
                 emotion_question("utterance_emotion", ["anger", "fear"])]  # fmt: skip
    decision = decisions.invoke(
        DecisionRequest.model_validate({"input": "hi", "questions": questions, "model": "default"})
    )
    typed = openai.types.Decision.model_validate(decision.model_dump(mode="json"))
    assert [a.type for a in typed.answers] == ["predicate", "choice", "score", "refusal"]
    assert typed.answers[1].probabilities[1].value is False and typed.model == "default"
    with pytest.raises(InputError) as wrong:
        decisions.invoke({"input": "hi", "questions": [Q], "model": "other"})
    assert wrong.value.field == "model"


# -- the scorer's batched path ---------------------------------------------------------------------------------------


def test_prompts_scored_together_equal_each_alone(chain: ELMDChain) -> None:
    from elmd_sdk.chains.decision_prompt import question_prompt, render_input
    from elmd_sdk.chains.decision_types import ChoiceQuestion, PredicateQuestion

    chat = chain.chat_model
    team = ChoiceQuestion(instructions="Which team?", choices=({"value": "billing"}, {"value": "technical support"}))
    urgent = PredicateQuestion(instructions="Is it urgent?")
    prompts = [question_prompt(render_input(text, "en"), q, "en") for text in ("I was charged twice.", "My dog died")
               for q in (urgent, team)]  # fmt: skip
    prompts.append((chain.build_messages("I got the job!"), [f"Emotion: {label}" for label in chain.labels]))
    together = chat.score_answers(prompts)
    alone = [chat.score_answers([prompt])[0] for prompt in prompts]
    for a, b in zip(together, alone, strict=True):
        assert a.rests == b.rests and a.prompt_tokens == b.prompt_tokens
        torch.testing.assert_close(a.log_likelihoods, b.log_likelihoods, atol=SAME_MATH, rtol=SAME_MATH)
    with chat.batched(8):  # concurrent callers in the engine: gathered, the same scores
        results: list[Any] = [None] * len(prompts)
        start = threading.Barrier(len(prompts))

        def ask(i: int) -> None:
            start.wait()
            results[i] = chat.score_answers([prompts[i]])[0]

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    for a, b in zip(results, alone, strict=True):
        torch.testing.assert_close(a.log_likelihoods, b.log_likelihoods, atol=SAME_MATH, rtol=SAME_MATH)
