"""``POST /v1/decisions`` driven by the real clients: the official ``openai`` package (sync, async, parallel) and
langchain-openai's ``OpenAIDecisions``; the emotion decisions equal the chat replies; bad requests are OpenAI errors."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from serve_fakes import endless_chain, running_server, tiny_chain
from tolerances import SAME_MATH

openai = pytest.importorskip("openai")

CONVERSATION = [
    {"role": "developer", "content": "Two friends at a party."},
    {"role": "user", "content": "Guess what?"},
    {"role": "assistant", "content": [{"type": "output_text", "text": "What?"}]},
    {"role": "user", "content": "I finally got the job!"},
]
MESSAGES = [  # the same conversation as a chat request
    {"role": "system", "content": "Two friends at a party."},
    {"role": "user", "content": "Guess what?"},
    {"role": "assistant", "content": "What?"},
    {"role": "user", "content": "I finally got the job!"},
]


def questions(labels: list[str]) -> list[dict[str, Any]]:
    """A predicate, a choice, a score and the two emotion questions."""
    emotions = [{"value": label} for label in labels]
    return [
        {"type": "predicate", "name": "urgent", "instructions": "Does this need an answer right away?"},
        {"type": "choice", "name": "topic", "instructions": "What is it about?",
         "choices": [{"value": "work", "description": "jobs, offices"}, {"value": "family"}, {"value": False}]},
        {"type": "score", "name": "joy", "instructions": "How glad is the speaker?",
         "levels": [{"label": "not at all"}, {"label": "somewhat"}, {"label": "very", "description": "elated"}]},
        {"type": "choice", "name": "utterance_emotion", "instructions": "The user's emotion.", "choices": emotions},
        {"type": "choice", "name": "response_emotion", "instructions": "The reply's emotion.", "choices": emotions},
    ]  # fmt: skip


@pytest.fixture(scope="module")
def chain() -> Any:
    return tiny_chain()


@pytest.fixture(scope="module")
def server(chain: Any) -> Iterator[str]:
    with running_server(chain) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Any:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def probabilities(answer: Any) -> dict[Any, float]:
    return {p.value: p.probability for p in answer.probabilities}


def test_the_openai_client_gets_every_answer_in_order(client: Any, chain: Any) -> None:
    labels = list(chain.labels)
    decision = client.decisions.create(model="default", input=CONVERSATION, questions=questions(labels))
    assert decision.model == "default" and [a.name for a in decision.answers] == [q["name"] for q in questions(labels)]
    urgent, topic, joy, utterance, response = decision.answers
    assert urgent.type == "predicate" and 0 < urgent.probability < 1
    assert topic.type == "choice" and [p.value for p in topic.probabilities] == ["work", "family", False]
    assert sum(probabilities(topic).values()) == pytest.approx(1.0) and topic.choice == max(
        probabilities(topic), key=probabilities(topic).__getitem__
    )
    assert 0 <= topic.confidence <= 1
    levels = [p.probability for p in joy.probabilities]
    assert joy.type == "score" and [(p.label, p.value) for p in joy.probabilities] == [
        ("not at all", 0), ("somewhat", 1), ("very", 2)]  # fmt: skip
    assert joy.score == pytest.approx(levels[1] + 2 * levels[2]) and sum(levels) == pytest.approx(1.0)
    # the emotion questions are the chat reply's: the same conversation through /v1/chat/completions
    reply = client.chat.completions.create(model="default", messages=MESSAGES, temperature=0)
    assert probabilities(response) == pytest.approx(
        reply.choices[0].message.model_extra["emotion_scores"], abs=SAME_MATH, rel=SAME_MATH
    )
    history = [{"role": "user", "content": "Guess what?"}, {"role": "assistant", "content": "What?"}]
    local = chain.invoke({"utterance": "I finally got the job!", "history": history,
                          "background": "Two friends at a party."})  # fmt: skip
    assert probabilities(utterance) == local.utterance_emotion_scores and utterance.choice == local.utterance_emotion
    assert decision.usage.input_tokens > reply.usage.prompt_tokens and decision.usage.output_tokens == 0
    assert decision.usage.total_tokens == decision.usage.input_tokens


def test_async_and_parallel_clients_get_what_one_gets_alone(server: str, client: Any, chain: Any) -> None:
    labels = list(chain.labels)
    texts = ["I got the job!", "My dog died.", "Hello", "You lied to me!"]

    def ask(text: str) -> Any:
        return client.decisions.create(model="default", input=text, questions=questions(labels))

    alone = [ask(text) for text in texts]

    async def together() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0) as aclient:
            asked = [aclient.decisions.create(model="default", input=t, questions=questions(labels)) for t in texts]
            return await asyncio.gather(*asked)

    with ThreadPoolExecutor(len(texts)) as pool:
        threaded = list(pool.map(ask, texts))
    for concurrent in (asyncio.run(together()), threaded):  # gathered in the engine: the same to SAME_MATH
        for one, other in zip(concurrent, alone, strict=True):
            for a, b in zip(one.answers, other.answers, strict=True):
                assert a.name == b.name
                if a.type == "predicate":
                    assert a.probability == pytest.approx(b.probability, abs=SAME_MATH, rel=SAME_MATH)
                else:
                    assert probabilities(a) == pytest.approx(probabilities(b), abs=SAME_MATH, rel=SAME_MATH)


def test_concurrent_decisions_are_scored_in_one_batch() -> None:
    chain = tiny_chain()
    sizes: list[int] = []
    model = chain.chat_model.hf_model
    handle = model.register_forward_pre_hook(
        lambda _m, _a, kwargs: sizes.append(kwargs["input_ids"].shape[0]) if "input_ids" in kwargs else None,
        with_kwargs=True,
    )
    start = threading.Barrier(6)

    def ask(url: str, text: str) -> int:
        start.wait()
        body = {"model": "default", "input": text, "questions": questions(list(chain.labels))[:1]}
        return httpx.post(f"{url}/v1/decisions", json=body, timeout=60).status_code

    try:
        with running_server(chain) as url, ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(ask, [url] * 6, [f"Message number {i} for you." for i in range(6)]))
    finally:
        handle.remove()
    assert codes == [200] * 6
    assert any(n > 1 for n in sizes)  # prompts of several requests in one forward pass


def test_langchain_openai_decisions(server: str, client: Any, chain: Any) -> None:
    decisions = pytest.importorskip("langchain_openai.decisions")
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    runnable = decisions.OpenAIDecisions(model="default", base_url=f"{server}/v1", api_key="unused", max_retries=0)
    labels = list(chain.labels)
    asked = {
        "urgent": decisions.Predicate(instructions="Does this need an answer right away?"),
        "topic": decisions.Choice(instructions="What is it about?", choices={"work": "jobs, offices", "family": None}),
        "joy": decisions.Score(instructions="How glad is the speaker?", levels=["not at all", "somewhat", "very"]),
        "utterance_emotion": decisions.Choice(instructions="The user's emotion.", choices=dict.fromkeys(labels)),
        "response_emotion": decisions.Choice(instructions="The reply's emotion.", choices=dict.fromkeys(labels)),
    }
    conversation = [
        SystemMessage("Two friends at a party."),
        HumanMessage("Guess what?"),
        AIMessage("What?"),
        HumanMessage("I finally got the job!"),
    ]  # fmt: skip (sent as one JSON user message)
    response = runnable.invoke({"input": conversation, "questions": asked})
    assert response.model == "default" and set(response.answers) == set(asked)
    assert 0 < response.predicates["urgent"].probability < 1
    assert set(response.choices["topic"].probabilities) == {"work", "family"}
    assert response.scores["joy"].legend == {0: "not at all", 1: "somewhat", 2: "very"}
    reply = client.chat.completions.create(model="default", messages=MESSAGES, temperature=0)
    assert response.choices["response_emotion"].probabilities == pytest.approx(
        reply.choices[0].message.model_extra["emotion_scores"], abs=SAME_MATH, rel=SAME_MATH
    )
    assert response.choices["utterance_emotion"].choice == "happy"
    batched = runnable.batch([{"input": "I got the job!", "questions": {"urgent": asked["urgent"]}}] * 3)
    assert len({round(r.predicates["urgent"].probability, 4) for r in batched}) == 1
    assert asyncio.run(runnable.ainvoke({"input": conversation, "questions": asked})).choices[
        "response_emotion"
    ].probabilities == pytest.approx(response.choices["response_emotion"].probabilities, abs=SAME_MATH, rel=SAME_MATH)


def _post(server: str, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return httpx.post(f"{server}/v1/decisions", content=content,
                      headers={"content-type": "application/json", **headers})  # fmt: skip


P = {"type": "predicate", "instructions": "Is it so?"}


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ("{not json", 400, None),
        ([P], 400, None),
        ({"input": "hi", "questions": [P]}, 400, "model"),
        ({"model": "gpt-6-luna", "input": "hi", "questions": [P]}, 404, "model"),
        ({"model": "default", "input": "", "questions": [P]}, 400, "input"),
        ({"model": "default", "input": [], "questions": [P]}, 400, "input"),
        ({"model": "default", "input": "x" * 32_001, "questions": [P]}, 400, "input"),
        ({"model": "default", "input": "hi", "questions": []}, 400, "questions"),
        ({"model": "default", "input": "hi", "questions": [P] * 17}, 400, "questions"),
        ({"model": "default", "input": "hi", "questions": [{"type": "rank", "instructions": "x"}]}, 400,
         "questions[0].type"),
        ({"model": "default", "input": "hi", "questions": [{"type": "choice", "instructions": "x",
                                                             "choices": [{"value": "a"}]}]}, 400,
         "questions[0].choices"),
        ({"model": "default", "input": "hi", "questions": [{"type": "choice", "instructions": "x",
                                                             "choices": [{"value": "a"}, {"value": "a"}]}]}, 400,
         "questions[0].choices"),
        ({"model": "default", "input": "hi", "questions": [{"type": "score", "instructions": "x",
                                                             "levels": [{"label": str(i)} for i in range(33)]}]}, 400,
         "questions[0].levels"),
        ({"model": "default", "input": "hi\ud800", "questions": [P]}, 400, "input"),
        ({"model": "default", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}],
          "questions": [P]}, 400, "input[0].content[0]"),
    ],
)  # fmt: skip
def test_bad_requests_get_openai_errors_and_the_server_lives_on(
    server: str, body: Any, status: int, param: str | None
) -> None:
    response = _post(server, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and "Traceback" not in response.text
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert httpx.get(f"{server}/health").status_code == 200
    assert _post(server, {"model": "default", "input": "hi", "questions": [P]}).status_code == 200


def test_the_openai_client_raises_on_bad_input(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.decisions.create(model="default", input="hi", questions=[{"type": "choice", "instructions": "x",
                                                                          "choices": [{"value": "a"}]}])  # fmt: skip
    assert refused.value.body["param"] == "questions[0].choices"
    with pytest.raises(openai.NotFoundError):
        client.decisions.create(model="gpt-6-luna", input="hi", questions=[P])


def test_the_api_key_applies() -> None:
    body = {"model": "default", "input": "hi", "questions": [P]}
    with running_server(tiny_chain(), api_key="s3cret") as url:
        assert _post(url, body).status_code == 401
        assert _post(url, body, authorization="Bearer nope").json()["error"]["code"] == "invalid_api_key"
        assert _post(url, body, authorization="Bearer s3cret").status_code == 200
        keyed = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert keyed.decisions.create(**body).answers[0].type == "predicate"


def test_a_full_server_answers_decisions_429() -> None:
    with running_server(endless_chain(), max_concurrency=1, retry_after_s=2) as url:
        body = {"model": "default", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as held:
            lines = held.iter_lines()  # kept: a dropped iterator closes the response, and the place with it
            assert next(lines).startswith("data: ")  # the endless reply is under way: it holds the only place
            busy = _post(url, {"model": "default", "input": "hi", "questions": [P]})
            assert busy.status_code == 429 and busy.headers["retry-after"] == "2"
            assert busy.json()["error"]["type"] == "rate_limit_error"
        deadline = time.monotonic() + 30  # the closed stream's place is freed once its decoding notices the close
        while (status := _post(url, {"model": "default", "input": "hi", "questions": [P]}).status_code) == 429:
            assert time.monotonic() < deadline, "the closed stream's place was never freed"
            time.sleep(0.2)
        assert status == 200
