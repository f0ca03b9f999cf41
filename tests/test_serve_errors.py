"""Every error of the server is OpenAI's ``{"error": {"message", "type", "param", "code"}}``: bodies FastAPI cannot
parse, unknown URLs and methods, text that is not Unicode, video paths the file system refuses."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_fakes import running_server, tiny_chain

from elmd_sdk.errors import InputError
from elmd_sdk.serve import ServeConfig
from elmd_sdk.serve.mapping import RequestError, chain_turn
from elmd_sdk.serve.openai_types import ChatCompletionRequest
from elmd_sdk.text_checks import check_text

HELLO = [{"role": "user", "content": "hello"}]
SURROGATE = "hi \ud800"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with running_server(tiny_chain()) as url:
        yield url


def _openai_error(response: httpx.Response, status: int) -> dict[str, Any]:
    """The response's error object, checked to be OpenAI's and nothing more."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and list(body["error"]) == ["message", "type", "param", "code"]
    return dict(body["error"])


def _post(url: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", content=content, headers={"content-type": "application/json"})


NESTED = b'{"model": "default", "messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
HUGE_NUMBER = b'{"model": "default", "messages": [], "seed": ' + b"7" * 5_000 + b"}"
NOT_UTF8 = b'{"model": "default", "messages": [{"role": "user", "content": "caf\xe9"}]}'
PARTS = [{"type": "text", "text": "ok"}, {"type": "text", "text": SURROGATE}]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (NESTED, "it nests too deeply"),
        (HUGE_NUMBER, "a number in it has more than 4300 digits"),
        (NOT_UTF8, f"it is not UTF-8 (invalid continuation byte at byte {NOT_UTF8.index(0xE9)})"),
        (b'{"model": "default", "messages": [}', "Expecting value"),
    ],
)
def test_bodies_that_cannot_be_parsed_get_400_in_openai_shape(server: str, body: bytes, reason: str) -> None:
    error = _openai_error(_post(server, body), 400)
    assert error == {"message": f"the body is not valid JSON: {reason}", "type": "invalid_request_error",
                     "param": None, "code": None}  # fmt: skip
    assert httpx.get(f"{server}/health").status_code == 200


def test_unknown_urls_and_methods_get_openai_errors(server: str) -> None:
    wrong_method = httpx.get(f"{server}/v1/chat/completions")
    assert wrong_method.headers["allow"] == "POST"
    assert _openai_error(wrong_method, 405) == {
        "message": "method not allowed (GET /v1/chat/completions); this URL takes POST",
        "type": "invalid_request_error", "param": None, "code": None}  # fmt: skip
    assert _openai_error(httpx.delete(f"{server}/v1/models"), 405)["message"].endswith("this URL takes GET")
    static = _openai_error(httpx.post(f"{server}/static/app.js"), 405)
    assert static["message"] == "method not allowed (POST /static/app.js); this URL takes GET, HEAD"
    for path in ("/v1/nothing", "/static/nothing.js"):
        assert _openai_error(httpx.get(f"{server}{path}"), 404) == {
            "message": f"unknown URL (GET {path})", "type": "not_found_error", "param": None, "code": None}  # fmt: skip
    assert httpx.get(f"{server}/health").status_code == 200


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"messages": [{"role": "user", "content": SURROGATE}]}, "messages[0].content"),
        ({"messages": [{"role": "system", "content": SURROGATE}, *HELLO]}, "messages[0].content"),
        ({"messages": [{"role": "user", "content": PARTS}]}, "messages[0].content[1].text"),
        ({"messages": [{"role": SURROGATE, "content": "x"}]}, "messages[0].role"),
        ({"messages": HELLO, "stop": SURROGATE}, "stop"),
        ({"messages": HELLO, "stop": ["ok", SURROGATE]}, "stop[1]"),
        ({"messages": HELLO, "background": SURROGATE}, "background"),
        ({"messages": HELLO, "emotion": SURROGATE}, "emotion"),
        ({"messages": HELLO, "allowed_emotions": ["sad", SURROGATE]}, "allowed_emotions[1]"),
        ({"messages": HELLO, "video": {"path": SURROGATE}}, "video.path"),
    ],
)
def test_a_lone_surrogate_in_any_text_field_is_400_naming_the_field(
    server: str, fields: dict[str, Any], param: str
) -> None:
    body = json.dumps({"model": "default", **fields})  # the surrogate goes as the JSON escape \ud800
    assert "\\ud800" in body
    with pytest.raises(InputError) as expected:
        check_text(SURROGATE, param)
    error = _openai_error(_post(server, body.encode()), 400)
    assert error == {"message": f"{param}: {expected.value.problem}", "type": "invalid_request_error",
                     "param": param, "code": None}  # fmt: skip
    assert httpx.get(f"{server}/health").status_code == 200


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("a\x00.mp4", "embedded null byte"),
        ("x" * 5000 + ".mp4", "File name too long"),  # one name over the file system's limit
        ("/".join(["d" * 200] * 30) + "/a.mp4", "File name too long"),  # the whole path over it
    ],
)
def test_video_paths_the_file_system_refuses_are_400_naming_the_field(tmp_path: Path, path: str, reason: str) -> None:
    request = ChatCompletionRequest.model_validate({"model": "default", "messages": HELLO, "video": {"path": path}})
    config = ServeConfig(video_root=tmp_path)
    with pytest.raises(RequestError) as caught, chain_turn(request, config, video_enabled=True):
        pass
    error = caught.value
    assert (error.status, error.param, error.message) == (400, "video.path", f"not a usable video path: {reason}")
