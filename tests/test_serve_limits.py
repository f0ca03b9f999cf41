"""The server's limits against clients that send too much, too slowly or wait too long, and its shutdown: each ends
with an OpenAI error (or, in a stream, an error event and ``data: [DONE]``) and the server lives on."""

from __future__ import annotations

import json
import select
import socket
from typing import Any

import anyio
import h11
import httpx
import pytest
from serve_fakes import endless_chain, running, running_server, server_for, tiny_chain

from elmd_sdk.serve import ServeConfig, create_app

HELLO = [{"role": "user", "content": "hello"}]
PIECE = 2**16


def _error(message: str, type: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": None, "code": None}}


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _response(client: h11.Connection, sock: socket.socket) -> tuple[h11.Response, bytes]:
    """The server's response on ``sock``, read with h11 (whatever the client still had to send)."""
    head, body = None, b""
    while True:
        event = client.next_event()
        if event is h11.NEED_DATA:
            client.receive_data(sock.recv(PIECE))
        elif isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return head, body


def test_a_chunked_upload_over_the_limit_is_refused_as_it_arrives() -> None:
    limit = ServeConfig(max_video_bytes=1000).max_body_bytes
    total = 16 * limit  # far more than the server, uvicorn and the kernel's buffers hold together
    with running_server(tiny_chain(), max_video_bytes=1000) as url, socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, PIECE)
        sock.connect(("127.0.0.1", _port(url)))
        client = h11.Connection(h11.CLIENT)
        headers = [("Host", "127.0.0.1"), ("Content-Type", "application/json"), ("Transfer-Encoding", "chunked")]
        sock.sendall(client.send(h11.Request(method="POST", target="/v1/chat/completions", headers=headers)))
        sent = 0
        while sent < total and not select.select([sock], [], [], 0)[0]:  # send until the server answers
            sock.sendall(client.send(h11.Data(data=b" " * PIECE)))
            sent += PIECE
        head, body = _response(client, sock)
        assert httpx.get(f"{url}/health").status_code == 200
    assert head.status_code == 413 and sent < total  # answered while the upload was still going
    assert json.loads(body) == _error(f"request body over {limit} bytes", "invalid_request_error")


def _asgi_post(app: Any, receive: Any) -> list[dict[str, Any]]:
    """The ASGI messages ``app`` sends for a chunked POST to /v1/chat/completions whose body comes from
    ``receive``."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80),
             "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")]}  # fmt: skip
    anyio.run(app, scope, receive, send)
    return sent


def test_the_body_limit_reads_no_more_than_one_piece_past_the_limit() -> None:
    config = ServeConfig(max_video_bytes=1000)
    read: list[int] = []

    async def endless_body() -> dict[str, Any]:
        read.append(PIECE)
        return {"type": "http.request", "body": b" " * PIECE, "more_body": True}

    sent = _asgi_post(create_app(tiny_chain(), config), endless_body)
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == _error(f"request body over {config.max_body_bytes} bytes",
                                                 "invalid_request_error")  # fmt: skip
    assert config.max_body_bytes < sum(read) <= config.max_body_bytes + PIECE


def test_headers_that_never_end_lose_the_connection() -> None:
    with running_server(tiny_chain(), read_timeout_s=1) as url:
        with socket.create_connection(("127.0.0.1", _port(url)), timeout=60) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and nothing more
            assert sock.recv(PIECE) == b""  # closed by the server, nothing sent
        assert httpx.get(f"{url}/health").status_code == 200


def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes() -> None:
    with running_server(tiny_chain(), read_timeout_s=1) as url:
        with socket.create_connection(("127.0.0.1", _port(url)), timeout=60) as sock:
            client = h11.Connection(h11.CLIENT)
            headers = [("Host", "127.0.0.1"), ("Content-Type", "application/json"), ("Content-Length", "100")]
            sock.sendall(client.send(h11.Request(method="POST", target="/v1/chat/completions", headers=headers)))
            sock.sendall(client.send(h11.Data(data=b'{"model": ')))  # 10 of the 100 bytes
            head, body = _response(client, sock)
            assert sock.recv(PIECE) == b""
        assert head.status_code == 408 and (b"connection", b"close") in head.headers
        assert json.loads(body) == _error("no part of the request body arrived for 1 s", "invalid_request_error")
        assert httpx.get(f"{url}/health").status_code == 200


def _stream_lines(url: str) -> list[str]:
    body = {"model": "default", "messages": HELLO, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as response:
        assert response.status_code == 200
        return [line for line in response.iter_lines() if line]


def _ended_stream(lines: list[str], message: str) -> None:
    """``lines`` are reply chunks, then the error event, then ``[DONE]``."""
    *chunks, error, done = lines
    assert json.loads(chunks[0].removeprefix("data: "))["choices"][0]["delta"]["emotion"] == "happy"
    assert {json.loads(c.removeprefix("data: "))["choices"][0]["delta"]["content"] for c in chunks[1:]} <= {" la"}
    assert json.loads(error.removeprefix("data: ")) == _error(message, "server_error") and done == "data: [DONE]"


def test_a_request_over_the_time_limit_is_stopped_and_answered() -> None:
    chain = endless_chain()
    message = "the request took longer than the server's limit of 1 s and was stopped"
    with running_server(chain, request_timeout_s=1, max_concurrency=1) as url:
        whole = httpx.post(f"{url}/v1/chat/completions", json={"model": "default", "messages": HELLO}, timeout=60)
        assert whole.status_code == 504 and whole.json() == _error(message, "server_error")
        assert chain.closed == 1  # its decoding stopped before the answer
        _ended_stream(_stream_lines(url), message)  # a stream (not a 429: the first gave its place back)
        assert chain.closed == 2
        assert httpx.get(f"{url}/health").status_code == 200


def test_a_shutdown_past_the_grace_period_ends_a_stream_with_an_error_and_done(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    chain = endless_chain()
    server = server_for(chain, shutdown_timeout_s=1)
    body = {"model": "default", "messages": HELLO, "stream": True}
    with running(server) as url, httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as reply:
        lines = reply.iter_lines()
        first = next(lines)
        server.should_exit = True  # what uvicorn's handler of SIGINT and SIGTERM does
        rest = [line for line in lines if line]
    _ended_stream([first, *rest], "the server is shutting down; the request was stopped")
    assert chain.closed == 1
    log = capfd.readouterr().err + caplog.text
    assert "Traceback" not in log and "Exception in ASGI application" not in log
    assert "Cancel" not in log  # the app ended the stream, not uvicorn's cancellation after the grace period
    assert not [record for record in caplog.records if record.exc_info]


def test_the_timeouts_are_serve_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from elmd_sdk.cli.main import build_app
    from elmd_sdk.serve import server

    configs: list[ServeConfig] = []
    monkeypatch.setattr(server, "serve", lambda _bundle, config, *_, **__: configs.append(config))
    for options in (["--request-timeout", "7", "--read-timeout", "3"], []):
        result = CliRunner().invoke(build_app("serve"), ["serve", *options])
        assert result.exit_code == 0, result.output
    assert [(c.request_timeout_s, c.read_timeout_s) for c in configs] == [(7, 3), (300, 15)]
    assert (ServeConfig().request_timeout_s, ServeConfig().read_timeout_s) == (300, 15)
