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
    assert first.model_extra["emotion_scores"] == whole.choices[0].message.model_extra["emotion_scores"]
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
    assert len(python) == 2 and len(shell) == 1  # the openai and LangChain examples, the curl example
    for code in python:
        exec(compile(code.replace("http://127.0.0.1:8000", server), "README.md", "exec"), {"__name__": "__main__"})
        assert capsys.readouterr().out.strip()
    if shutil.which("curl"):
        done = subprocess.run(["bash", "-c", shell[0].replace("http://127.0.0.1:8000", server)], capture_output=True,
                              text=True, timeout=60, check=True)  # fmt: skip
        assert json.loads(done.stdout)["choices"][0]["message"]["emotion"] in tiny_chain().labels
