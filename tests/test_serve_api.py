"""The OpenAI-compatible server, driven by real clients: the official ``openai`` package and LangChain's ChatOpenAI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_fakes import running_server, tiny_chain
from tolerances import SAME_MATH

openai = pytest.importorskip("openai")

HELLO = [{"role": "user", "content": "I finally got the job!"}]


@pytest.fixture(scope="module")
def chain() -> Any:
    return tiny_chain()


@pytest.fixture(scope="module")
def server(chain: Any) -> Iterator[str]:
    with running_server(chain, max_video_bytes=1000) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Any:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)


def test_models_and_health(client: Any, server: str, chain: Any) -> None:
    [model] = client.models.list().data
    assert model.id == "default" and model.model_extra["emotions"] == list(chain.labels)
    assert model.model_extra["video"] is False
    assert httpx.get(f"{server}/health").json() == {"status": "ok", "model": "default", "active": 0, "waiting": 0}


def test_a_completion_carries_the_emotion_and_token_counts(client: Any, chain: Any) -> None:
    reply = client.chat.completions.create(model="default", messages=HELLO, temperature=0)
    expected = chain.invoke({"utterance": HELLO[0]["content"], "history": []})
    message = reply.choices[0].message
    assert message.role == "assistant" and message.content == expected.response
    assert message.model_extra["emotion"] == expected.emotion in chain.labels
    assert message.model_extra["emotion_scores"] == pytest.approx(expected.emotion_scores)
    assert sum(message.model_extra["emotion_scores"].values()) == pytest.approx(1.0)
    assert reply.usage.prompt_tokens == expected.usage["input_tokens"] > 0
    assert reply.usage.completion_tokens == expected.usage["output_tokens"] > 0
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert reply.choices[0].finish_reason == expected.finish_reason


def test_the_stream_equals_the_completion(client: Any) -> None:
    whole = client.chat.completions.create(model="default", messages=HELLO, temperature=0)
    chunks = list(
        client.chat.completions.create(
            model="default", messages=HELLO, temperature=0, stream=True, stream_options={"include_usage": True}
        )
    )
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.model_extra["emotion"] == whole.choices[0].message.model_extra["emotion"]
    # the second request reuses the first's cached prompt beginning: the same math run two ways (tests/tolerances.py)
    assert first.model_extra["emotion_scores"] == pytest.approx(
        whole.choices[0].message.model_extra["emotion_scores"], abs=SAME_MATH, rel=SAME_MATH
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1  # streamed, not one piece
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_the_history_and_the_system_message_reach_the_prompt(client: Any, chain: Any) -> None:
    messages = [
        {"role": "system", "content": "Two friends at a party."},
        {"role": "user", "content": "Guess what?"},
        {"role": "assistant", "content": "What?"},
        {"role": "user", "content": [{"type": "text", "text": "I finally got the job!"}]},
    ]
    reply = client.chat.completions.create(model="default", messages=messages, temperature=0)
    history = [{"role": "user", "content": "Guess what?"}, {"role": "assistant", "content": "What?"}]
    data = {"utterance": "I finally got the job!", "history": history, "background": "Two friends at a party."}
    assert reply.choices[0].message.content == chain.invoke(data).response
    prompt = "".join(str(m.content) for m in chain.prepare(data)[0])
    assert "Two friends at a party." in prompt and "Guess what?" in prompt
    other = {**data, "background": "At work."}
    given = client.chat.completions.create(
        model="default", messages=messages, temperature=0, extra_body={"background": "At work."}
    )
    assert given.usage.prompt_tokens == chain.invoke(other).usage["input_tokens"]  # background field wins


def test_forced_and_allowed_emotions_and_no_retrieval(client: Any, chain: Any) -> None:
    forced = client.chat.completions.create(model="default", messages=HELLO, extra_body={"emotion": "fear"})
    assert forced.choices[0].message.model_extra["emotion"] == "fear"
    allowed = client.chat.completions.create(
        model="default", messages=HELLO, extra_body={"allowed_emotions": ["sad", "anger"]}
    )
    scores = allowed.choices[0].message.model_extra["emotion_scores"]
    assert allowed.choices[0].message.model_extra["emotion"] in ("sad", "anger")
    assert {k for k, v in scores.items() if v > 0} <= {"sad", "anger"}
    calls = chain.retriever.calls
    plain = client.chat.completions.create(
        model="default", messages=HELLO, temperature=0, extra_body={"retrieval": False}
    )
    assert chain.retriever.calls == calls
    assert plain.usage.prompt_tokens < forced.usage.prompt_tokens  # no demonstration in the prompt


def test_sampling_fields_are_used(client: Any) -> None:
    def ask(**fields: Any) -> Any:
        return client.chat.completions.create(model="default", messages=HELLO, **fields)

    assert ask(max_tokens=3).usage.completion_tokens <= 3
    assert ask(max_completion_tokens=2).usage.completion_tokens <= 2
    one, two = ask(temperature=1.5, top_p=0.95, seed=7), ask(temperature=1.5, top_p=0.95, seed=7)
    assert one.choices[0].message.content == two.choices[0].message.content
    greedy = ask(temperature=0).choices[0].message.content
    cut = greedy[len(greedy) // 2 : len(greedy) // 2 + 2]
    assert ask(temperature=0, stop=[cut]).choices[0].message.content == greedy[: greedy.index(cut)]


def test_parallel_clients_get_what_they_would_get_alone(client: Any) -> None:
    texts = ["I got the job!", "My dog died.", "Hello", "You lied to me!"]

    def ask(text: str) -> str:
        reply = client.chat.completions.create(
            model="default", messages=[{"role": "user", "content": text}], temperature=0
        )
        return str(reply.choices[0].message.content)

    alone = [ask(text) for text in texts]
    with ThreadPoolExecutor(len(texts)) as pool:
        assert list(pool.map(ask, texts)) == alone


def test_langchain_chat_openai(server: str, client: Any) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    llm = langchain_openai.ChatOpenAI(
        base_url=f"{server}/v1", api_key="unused", model="default", temperature=0, max_retries=0
    )
    expected = client.chat.completions.create(model="default", messages=HELLO, temperature=0)
    text = expected.choices[0].message.content
    assert llm.invoke(HELLO[0]["content"]).content == text
    assert "".join(str(chunk.content) for chunk in llm.stream(HELLO[0]["content"])) == text
    assert [m.content for m in llm.batch([HELLO[0]["content"]] * 3)] == [text] * 3


def _post(server: str, body: Any, **headers: str) -> httpx.Response:
    content = body if isinstance(body, str | bytes) else json.dumps(body)
    return httpx.post(f"{server}/v1/chat/completions", content=content,
                      headers={"content-type": "application/json", **headers})  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ("{not json", 400, None),
        ({"model": "default"}, 400, "messages"),
        ({"model": "default", "messages": []}, 400, "messages"),
        ({"model": "default", "messages": [{"role": "tool", "content": "x"}]}, 400, "messages[0].role"),
        ({"model": "default", "messages": [{"role": "user", "content": "x" * 16001}]}, 400, "messages[0].content"),
        ({"model": "default", "messages": [{"role": "assistant", "content": "hi"}]}, 400, "messages"),
        ({"model": "default", "messages": [{"role": "user", "content": "  "}]}, 400, "messages[0]"),
        ({"model": "gpt-4o", "messages": HELLO}, 404, "model"),
        ({"model": "default", "messages": HELLO, "emotion": "joyous"}, 400, "emotion"),
        ({"model": "default", "messages": HELLO, "allowed_emotions": ["sad", "bored"]}, 400, "allowed_emotions"),
        ({"model": "default", "messages": HELLO, "n": 2}, 400, "n"),
        ({"model": "default", "messages": HELLO, "temperature": 3}, 400, "temperature"),
        ({"model": "default", "messages": HELLO, "video": {"path": "clip.mp4"}}, 400, "video"),
    ],
)
def test_bad_requests_get_openai_errors_and_the_server_lives_on(
    server: str, body: Any, status: int, param: str | None
) -> None:
    response = _post(server, body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and "Traceback" not in response.text
    assert error["type"] == ("not_found_error" if status == 404 else "invalid_request_error")
    assert httpx.get(f"{server}/health").status_code == 200


def test_a_huge_body_is_refused_before_it_is_read(server: str) -> None:
    response = _post(server, b"x" * 10_000_000)
    assert response.status_code == 413 and response.json()["error"]["message"].startswith("request body over")


def test_api_key() -> None:
    with running_server(tiny_chain(), api_key="s3cret") as url:
        assert _post(url, {"model": "default", "messages": HELLO}).status_code == 401
        wrong = _post(url, {"model": "default", "messages": HELLO}, authorization="Bearer nope")
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{url}/v1/models").status_code == 401
        assert _post(url, {"model": "default", "messages": HELLO}, authorization="Bearer s3cret").status_code == 200
        assert httpx.get(f"{url}/").status_code == 200 and httpx.get(f"{url}/health").status_code == 200
        keyed = openai.OpenAI(base_url=f"{url}/v1", api_key="s3cret", max_retries=0)
        assert keyed.chat.completions.create(model="default", messages=HELLO).choices[0].message.content is not None


def test_a_full_server_answers_429_at_once_and_recovers() -> None:
    with running_server(tiny_chain(), max_concurrency=1, retry_after_s=2) as url:
        body = {"model": "default", "messages": HELLO, "stream": True, "max_tokens": 1000}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as held:
            lines = held.iter_lines()
            assert next(lines).startswith("data: ")  # the first request is inside, decoding
            started = time.monotonic()
            busy = _post(url, {"model": "default", "messages": HELLO})
            assert busy.status_code == 429 and busy.headers["retry-after"] == "2"
            assert busy.json()["error"]["type"] == "rate_limit_error"
            assert time.monotonic() - started < 5
        deadline = time.monotonic() + 10
        while _post(url, {"model": "default", "messages": HELLO, "max_tokens": 2}).status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_a_client_that_disconnects_stops_its_decoding() -> None:
    chain = tiny_chain()
    generated: list[int] = []
    model = chain.chat_model.hf_model
    handle = model.register_forward_pre_hook(lambda *_: generated.append(1))
    try:
        with running_server(chain) as url:
            body = {"model": "default", "messages": HELLO, "stream": True, "max_tokens": 1500}
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                lines = response.iter_lines()
                for _ in range(3):
                    next(lines)
            deadline = time.monotonic() + 10
            while httpx.get(f"{url}/health").json()["active"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert httpx.get(f"{url}/health").json()["active"] == 0
            passes = len(generated)
            time.sleep(0.5)
            assert len(generated) == passes < 1000  # decoding stopped long before max_tokens
    finally:
        handle.remove()


def test_concurrent_streams_are_decoded_in_one_batch() -> None:
    chain = tiny_chain()
    sizes: list[int] = []
    model = chain.chat_model.hf_model
    handle = model.register_forward_pre_hook(
        lambda _m, _a, kwargs: sizes.append(kwargs["input_ids"].shape[0]) if "input_ids" in kwargs else None,
        with_kwargs=True,
    )
    barrier = threading.Barrier(4)

    def stream(url: str) -> str:
        barrier.wait()
        body = {"model": "default", "messages": HELLO, "stream": True, "max_tokens": 60, "temperature": 0}
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
            return "".join(response.iter_lines())

    try:
        with running_server(chain) as url, ThreadPoolExecutor(4) as pool:
            results = list(pool.map(stream, [url] * 4))
    finally:
        handle.remove()
    assert all(r.endswith("data: [DONE]") for r in results)
    assert any(1 < n <= 4 for n in sizes)  # decode steps with several requests' rows (7 = label scoring)


def _readme_blocks(language: str) -> list[str]:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(rf"^```{language}\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    return [block for block in blocks if "http://127.0.0.1:8000" in block and "elmd-sdk serve" not in block]


def test_the_readmes_client_examples_run_against_a_server(server: str, capsys: pytest.CaptureFixture[str]) -> None:
    python, shell = _readme_blocks("python"), _readme_blocks("bash")
    assert len(python) == 4 and len(shell) == 2  # the openai and LangChain examples, the curl example: chat, decisions
    for code in python:
        exec(compile(code.replace("http://127.0.0.1:8000", server), "README.md", "exec"), {"__name__": "__main__"})
        assert capsys.readouterr().out.strip()
    if shutil.which("curl"):
        chat, decision = (
            json.loads(subprocess.run(["bash", "-c", block.replace("http://127.0.0.1:8000", server)],
                                      capture_output=True, text=True, timeout=60, check=True).stdout)
            for block in shell
        )  # fmt: skip
        assert chat["choices"][0]["message"]["emotion"] in tiny_chain().labels
        assert [answer["name"] for answer in decision["answers"]] == ["escalate", "utterance_emotion"]


# -- exact wire bytes, the API key's scheme, limits at their boundary, when a place is freed ------------------------


def _events_of(raw: bytes) -> list[str]:
    """The ``data:`` payloads of a raw event stream, checked to be exactly ``data: PAYLOAD\\n\\n`` each."""
    text = raw.decode("utf-8")
    assert text.endswith("data: [DONE]\n\n") and "\r" not in text
    events = text.split("\n\n")
    assert events[-1] == ""  # the stream ends with the blank line after [DONE], and nothing after it
    payloads = []
    for event in events[:-1]:
        assert event.startswith("data: ") and "\n" not in event, repr(event)  # one line per event
        payloads.append(event[len("data: ") :])
    return payloads


def test_the_event_stream_on_the_wire(server: str, client: Any) -> None:
    whole = client.chat.completions.create(model="default", messages=HELLO, temperature=0)
    body = {"model": "default", "messages": HELLO, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    response = httpx.post(f"{server}/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    payloads = _events_of(response.content)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(payload) for payload in payloads[:-1]]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]} and chunks[0]["id"].startswith("chatcmpl-")
    assert {(c["object"], c["model"]) for c in chunks} == {("chat.completion.chunk", "default")}
    message = whole.choices[0].message
    first, *middle, finish, usage = chunks
    extra = message.model_extra
    opening = {"role": "assistant", "content": first["choices"][0]["delta"]["content"], "emotion": extra["emotion"]}
    scores = first["choices"][0]["delta"].pop("emotion_scores")  # the cached prompt beginning: equal to SAME_MATH
    assert scores == pytest.approx(extra["emotion_scores"], abs=SAME_MATH, rel=SAME_MATH)
    assert first["choices"] == [{"index": 0, "finish_reason": None, "logprobs": None, "delta": opening}]
    assert middle and all(set(c["choices"][0]["delta"]) == {"content"} for c in middle)
    assert all(c["choices"][0]["delta"]["content"] and c["choices"][0]["finish_reason"] is None for c in middle)
    text = first["choices"][0]["delta"]["content"] + "".join(c["choices"][0]["delta"]["content"] for c in middle)
    assert text == message.content
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": whole.choices[0].finish_reason,
                                  "logprobs": None}]  # fmt: skip
    assert usage["choices"] == [] and usage["usage"] == whole.usage.model_dump(exclude_none=True)
    plain = httpx.post(f"{server}/v1/chat/completions", json={**body, "stream_options": None})
    plain_chunks = [json.loads(payload) for payload in _events_of(plain.content)[:-1]]
    assert plain_chunks[-1]["choices"][0]["finish_reason"] and not any("usage" in c for c in plain_chunks)


def test_events_are_utf8_json_lines() -> None:
    from elmd_sdk.serve.app import _sse

    assert _sse({"content": "café 好", "n": 1}) == 'data: {"content": "café 好", "n": 1}\n\n'


def test_the_api_key_goes_only_under_the_bearer_scheme() -> None:
    with running_server(tiny_chain(), api_key="s3cret") as url:

        def status(*authorization: str) -> int:
            headers = {"authorization": authorization[0]} if authorization else {}
            return httpx.get(f"{url}/v1/models", headers=headers).status_code

        assert status("Bearer s3cret") == status("bearer s3cret") == status("BEARER  s3cret") == 200
        wrong_keys = ("Basic s3cret", "Token s3cret", "s3cret", "Bearer", "Bearers3cret", "Bearer s3cre",
                      "Bearer s3cretX", "Bearer S3CRET", "Basic czNjcmV0", "Bearer s3cret s3cret")  # fmt: skip
        for wrong in wrong_keys:
            assert status(wrong) == 401, wrong
        assert status() == 401
        assert httpx.get(f"{url}/v1/models", headers={"x-api-key": "s3cret"}).status_code == 401
        assert httpx.get(f"{url}/health").status_code == 200  # outside /v1/: open
    with running_server(tiny_chain()) as url:  # no key configured: nothing is asked
        assert httpx.get(f"{url}/v1/models", headers={"authorization": "Basic anything"}).status_code == 200


def test_the_body_limit_takes_exactly_the_limit(server: str) -> None:
    from elmd_sdk.serve import ServeConfig

    limit = ServeConfig(max_video_bytes=1000).max_body_bytes  # the module's server
    assert limit >= 1000 * 4 // 3 + 8 * 2**20  # room for the largest video's base64 and the messages
    at = _post(server, b" " * limit)
    assert at.status_code == 400 and at.json()["error"]["message"].startswith("the body is not valid JSON")
    over = _post(server, b" " * (limit + 1))
    assert over.status_code == 413 and over.json()["error"]["message"] == f"request body over {limit} bytes"


def test_the_gate_admits_exactly_its_limit() -> None:
    from elmd_sdk.serve.app import _Gate
    from elmd_sdk.serve.mapping import RequestError

    gate = _Gate(2)
    gate.enter()
    gate.enter()
    with pytest.raises(RequestError) as refused:
        gate.enter()
    assert (refused.value.status, refused.value.code) == (429, "rate_limit_exceeded") and gate.inside == 2
    gate.leave()
    gate.enter()  # a freed place is taken again
    assert gate.inside == 2


def test_refused_requests_give_their_place_back() -> None:
    with running_server(tiny_chain(), max_concurrency=1) as url:
        refused = [
            {"model": "default", "messages": HELLO, "emotion": "joyous"},  # refused by the chain
            {"model": "default", "messages": [{"role": "tool", "content": "x"}]},  # refused while mapping
            {"model": "default", "messages": HELLO, "video": {"path": "clip.mp4"}},  # no video here
        ]
        for body in refused * 2:  # a place kept by the first would make the second a 429
            assert _post(url, body).status_code == 400
        assert _post(url, {"model": "default", "messages": HELLO, "max_tokens": 2}).status_code == 200
        assert _post(url, {"model": "default", "messages": HELLO, "max_tokens": 2, "stream": True}).status_code == 200
        assert _post(url, {"model": "default", "messages": HELLO, "max_tokens": 2}).status_code == 200


class _Stream:
    """A chain stream of given chunks (an exception is raised where it stands); records that it was closed."""

    def __init__(self, items: list[Any]) -> None:
        self.items, self.closed = iter(items), 0

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> Any:
        item = next(self.items)
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.closed += 1


def _run_events(items: list[Any], include_usage: bool, stop_after: int | None = None) -> tuple[list[Any], Any, Any]:
    """Drive the app's event generator over ``items``: each event with (place freed?, stream closed?) when it was
    yielded; the client goes away after ``stop_after`` events."""
    import asyncio
    import contextlib

    from elmd_sdk.serve.app import _events

    stream, freed = _Stream(items[1:]), []
    scope = contextlib.ExitStack()
    scope.callback(lambda: freed.append(1))

    async def drive() -> list[Any]:
        seen: list[Any] = []
        events = _events(stream, items[0], "default", include_usage, scope)
        async for event in events:
            seen.append((event, len(freed), stream.closed))
            if stop_after is not None and len(seen) == stop_after:
                await events.aclose()  # what starlette does when the client disconnects
                break
        return seen

    return asyncio.run(drive()), freed, stream


def test_a_stream_frees_its_place_before_its_last_events_and_only_once() -> None:
    from elmd_sdk.answer.result import ELMDResult

    usage = {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
    items = [ELMDResult("sad", "", emotion_scores={"sad": 1.0}, usage={**usage, "output_tokens": 0,
                                                                       "total_tokens": 5}),
             ELMDResult(None, "Oh", usage={"input_tokens": 0, "output_tokens": 1, "total_tokens": 1}),
             ELMDResult(None, " no", usage={"input_tokens": 0, "output_tokens": 1, "total_tokens": 1},
                        finish_reason="length")]  # fmt: skip
    seen, freed, _ = _run_events(items, include_usage=True)
    payloads = [json.loads(event[len("data: ") :]) if "[DONE]" not in event else "[DONE]" for event, _, _ in seen]
    assert [event[-2:] for event, _, _ in seen] == ["\n\n"] * 6
    assert [p["choices"][0]["delta"] for p in payloads[:3]] == [
        {"role": "assistant", "content": "", "emotion": "sad", "emotion_scores": {"sad": 1.0}},
        {"content": "Oh"},
        {"content": " no"},
    ]
    assert payloads[3]["choices"][0] == {"index": 0, "delta": {}, "finish_reason": "length", "logprobs": None}
    assert payloads[4]["choices"] == [] and payloads[4]["usage"] == {
        "prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}  # fmt: skip
    assert payloads[5] == "[DONE]" and seen[5][0] == "data: [DONE]\n\n"
    # decoding events go out while the place is held; the end goes out once the place is free and the stream closed
    assert [(place, closed) for _, place, closed in seen] == [(0, 0)] * 3 + [(1, 1)] * 3
    assert freed == [1]
    seen, _, _ = _run_events(items, include_usage=False)
    assert len(seen) == 5 and '"finish_reason": "length"' in seen[3][0] and seen[4][0] == "data: [DONE]\n\n"


def test_a_client_that_goes_away_or_a_failing_stream_frees_the_place() -> None:
    from elmd_sdk.answer.result import ELMDResult
    from elmd_sdk.errors import InputError

    items = [ELMDResult("sad", ""), ELMDResult(None, "a"), ELMDResult(None, "b"), ELMDResult(None, "c")]
    seen, freed, stream = _run_events(items, include_usage=False, stop_after=2)
    assert len(seen) == 2 and freed == [1] and stream.closed >= 1
    seen, freed, stream = _run_events([*items[:2], InputError("the reply went wrong")], include_usage=False)
    error, done = seen[-1][0].split("\n\n")[:2]  # a failed stream ends as a stopped one: the error, then [DONE]
    assert json.loads(error[len("data: ") :]) == {"error": {
        "message": "the reply went wrong", "type": "server_error", "param": None, "code": None}}  # fmt: skip
    assert done == "data: [DONE]" and seen[-1][0].endswith("data: [DONE]\n\n")
    assert sum("[DONE]" in event for event, _, _ in seen) == 1
    assert freed == [1] and stream.closed >= 1
    seen, freed, _ = _run_events([*items[:2], RuntimeError("secret detail")], include_usage=False)
    assert "secret detail" not in seen[-1][0] and "internal error" in seen[-1][0] and freed == [1]


def test_the_history_is_fitted_beside_the_reply_length_the_request_asks_for() -> None:
    """A request's max_tokens, not the model's default of 16, decides how much history fits the context."""
    probe = tiny_chain()
    bare = probe.count_tokens(probe.prepare({"utterance": "And now?"})[0])
    window = bare + 16 + 40
    history = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} says a few words"} for i in range(30)
    ]
    messages = [*history, {"role": "user", "content": "And now?"}]
    with running_server(tiny_chain(context_window=window)) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        default = client.chat.completions.create(model="default", messages=messages, temperature=0)
        short = client.chat.completions.create(model="default", messages=messages, temperature=0, max_tokens=2)
    assert default.usage.prompt_tokens <= window - 16 < short.usage.prompt_tokens <= window - 2
    assert short.usage.completion_tokens <= 2
