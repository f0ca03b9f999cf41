"""The OpenAI-compatible HTTP app over one ELMD chain (FastAPI), and the web chat page.

Every request runs the chain in a worker thread; the chat model's batch engine (``ELMDChatModel.batched``) decodes
concurrent replies together. At most ``max_concurrency`` requests are inside at once; one more gets 429 with
``Retry-After`` at once instead of waiting. The server keeps no conversation state: the history comes with each
request, so replicas behind a load balancer are interchangeable.

Every error is OpenAI's ``{"error": {"message", "type", "param", "code"}}``, the framework's own refusals (unknown
URL, wrong method, unreadable body) included. A pure ASGI middleware (``_Guard``) checks the API key, counts the
body's bytes as they arrive (so a chunked upload meets the same limit as one with a Content-Length), times the body's
arrival, and holds every request under a time limit that a shutdown can also end.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from elmd_sdk.answer.result import ELMDResult, add_usage
from elmd_sdk.chains.chain import ELMDChain
from elmd_sdk.errors import InputError
from elmd_sdk.serve import openai_types as oa
from elmd_sdk.serve.config import ServeConfig
from elmd_sdk.serve.decisions import add_decisions_route
from elmd_sdk.serve.mapping import RequestError, chain_turn, check_model

log = logging.getLogger("elmd_sdk.serve")
STATIC = Path(__file__).with_name("static")
_END = object()


class _Gate:
    """Counts the requests inside the server; refuses one over the limit."""

    def __init__(self, limit: int) -> None:
        self.limit, self.inside = limit, 0

    def enter(self) -> None:
        if self.inside >= self.limit:
            raise RequestError(429, f"the server is busy ({self.limit} requests in progress); retry shortly",
                               code="rate_limit_exceeded")  # fmt: skip
        self.inside += 1

    def leave(self) -> None:
        self.inside -= 1


class _InFlight:
    """The cancel scopes of the requests being answered: each ends at its time limit, all end when a shutdown's
    grace period is over (:func:`end_requests`)."""

    def __init__(self) -> None:
        self.scopes: set[anyio.CancelScope] = set()
        self.ending = False

    @contextlib.contextmanager
    def limit(self, seconds: float) -> Iterator[anyio.CancelScope]:
        with anyio.move_on_after(seconds) as scope:
            if self.ending:
                scope.cancel()
            self.scopes.add(scope)
            try:
                yield scope
            finally:
                self.scopes.discard(scope)

    def end_all(self) -> None:
        self.ending = True
        for scope in list(self.scopes):
            scope.cancel()


class _Reply:
    """The ASGI ``send`` of one request, remembering how far its response went."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.headers: Headers | None = None  # once the response started
        self.complete = False

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.headers = Headers(raw=message["headers"])
        elif message["type"] == "http.response.body" and not message.get("more_body", False):
            self.complete = True
        await self.send(message)


class _Guard:
    """Pure ASGI middleware in front of the routes (pure, so that it sees the body as it arrives and can still
    answer a request it ends).

    A ``/v1`` request without the API key gets 401 before anything is read. The body is read through a ``receive``
    that refuses it (413) once the declared length or the bytes that arrived exceed ``max_body_bytes``, whatever the
    transfer encoding, and that gives up (408, connection closed) when a piece of it takes longer than
    ``read_timeout_s``. Each request runs under ``request_timeout_s``; a request ended by that limit or by a shutdown
    (its decoding stops through the cancellation) still gets a whole answer: an OpenAI error (504, or 503 at a
    shutdown) or, in a stream already under way, an error event and ``data: [DONE]``.
    """

    def __init__(self, app: ASGIApp, config: ServeConfig, in_flight: _InFlight) -> None:
        self.app, self.config, self.in_flight = app, config, in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        key = self.config.api_key
        if key and scope["path"].startswith("/v1/") and not _bears(headers, key):
            refusal = RequestError(401, "missing or wrong API key (Authorization: Bearer KEY)", code="invalid_api_key")
            await _error(refusal)(scope, receive, send)
            return
        reply = _Reply(send)
        with self.in_flight.limit(self.config.request_timeout_s) as limit:
            await self.app(scope, self._body(receive, headers), reply)
        if limit.cancelled_caught and not reply.complete:
            await self._end(reply, scope, receive)

    def _body(self, receive: Receive, headers: Headers) -> Receive:
        """``receive`` under the body limit and the read timeout; once the body is in, plain ``receive`` (a stream
        waits on it for the client to leave). Refusals are HTTPExceptions, which FastAPI lets through its body
        parsing to the app's handler."""
        limit, timeout = self.config.max_body_bytes, self.config.read_timeout_s
        length = headers.get("content-length", "")
        declared, read, done = int(length) if length.isdigit() else 0, 0, False

        async def receive_body() -> Message:
            nonlocal read, done
            if done:
                return await receive()
            if max(declared, read) <= limit:  # a declared length over the limit is refused unread
                with anyio.move_on_after(timeout) as waiting:
                    message = await receive()
                if waiting.cancelled_caught:
                    raise HTTPException(408, f"no part of the request body arrived for {timeout} s",
                                        headers={"Connection": "close"})  # fmt: skip
                if message["type"] != "http.request":
                    return message
                read, done = read + len(message.get("body", b"")), not message.get("more_body", False)
                if read <= limit:
                    return message
            raise HTTPException(413, f"request body over {limit} bytes")

        return receive_body

    async def _end(self, reply: _Reply, scope: Scope, receive: Receive) -> None:
        """Answer a request that was ended before its response was complete."""
        if self.in_flight.ending:
            why = RequestError(503, "the server is shutting down; the request was stopped")
        else:
            limit = self.config.request_timeout_s
            why = RequestError(504, f"the request took longer than the server's limit of {limit} s and was stopped")
        if reply.headers is None:
            await _error(why)(scope, receive, reply)
        elif reply.headers.get("content-type", "").startswith("text/event-stream"):
            await reply({"type": "http.response.body", "body": _stream_end(why.message).encode(), "more_body": False})
        # a plain body cut midway cannot be completed: uvicorn closes the connection


def _bears(headers: Headers, key: str) -> bool:
    """Whether the request carries ``Authorization: Bearer KEY`` (compared in constant time)."""
    scheme, _, given = headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())


def end_requests(app: FastAPI) -> None:
    """End every request ``app`` is answering, and any that comes later (a shutdown's grace period is over)."""
    app.state.in_flight.end_all()


def create_app(chain: ELMDChain, config: ServeConfig) -> FastAPI:
    """The app serving ``chain`` as model ``config.model_id``: ``/v1/chat/completions``, ``/v1/decisions``,
    ``/v1/models``, ``/health`` and the chat page at ``/``."""
    gate = _Gate(config.max_concurrency)
    in_flight = _InFlight()
    engine: list[Any] = []

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, config.max_concurrency + 8)
        batched = getattr(chain.chat_model, "batched", None)
        with batched(config.max_batch) if batched else contextlib.nullcontext() as running:
            engine[:] = [running]
            yield
            engine.clear()

    app = FastAPI(title="elmd-sdk", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.in_flight = in_flight
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(_Guard, config=config, in_flight=in_flight)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {}
        message = first.get("msg", "invalid request")
        param = _param(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            message, param = _not_json(first.get("ctx", {}).get("error", message)), None
        return _error(_bad_field(message, param))

    @app.exception_handler(HTTPException)
    async def refused_by_http(request: Request, error: HTTPException) -> Response:
        """The framework's refusals (unknown URL, wrong method, a body it could not parse) and the body limits."""
        return _error(RequestError(error.status_code, _http_message(request, error)), headers=error.headers)

    @app.exception_handler(RequestError)
    async def refused(_request: Request, error: RequestError) -> Response:
        return _error(error, headers={"Retry-After": str(config.retry_after_s)} if error.status == 429 else None)

    @app.exception_handler(InputError)
    async def bad_input(_request: Request, error: InputError) -> Response:
        return _error(_bad_field(error.problem, error.field))

    @app.exception_handler(Exception)
    async def failed(_request: Request, error: Exception) -> Response:
        log.exception("request failed")
        return _error(RequestError(500, "internal error while answering (see the server log)"))

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        running = engine[0] if engine else None
        return {
            "status": "ok",
            "model": config.model_id,
            "active": running.active if running else gate.inside,
            "waiting": running.waiting if running else 0,
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [_model_card(chain, config)]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(body: oa.ChatCompletionRequest) -> JSONResponse | StreamingResponse:
        check_model(body.model, config)
        gate.enter()
        request_scope = contextlib.ExitStack()  # what the request holds until its reply ends: its place, its video
        request_scope.callback(gate.leave)
        try:
            turn = request_scope.enter_context(chain_turn(body, config, video_enabled=chain.video_enabled))
            target = chain if body.retrieval else chain.model_copy(update={"use_retrieval": False})
            stream = target.stream(turn.input, **turn.options)
            try:
                first = await _next(stream)  # input errors surface here, as a 4xx, before any byte is sent
            except BaseException:
                await _shielded_close(stream)  # ended here (time limit, shutdown): its decoding stops too
                raise
        except BaseException:
            request_scope.close()
            raise
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            events = _events(stream, first, body.model, include_usage, request_scope)
            return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        with request_scope:
            try:
                result = ELMDResult(None, "")
                while first is not _END:
                    result, first = result + first, await _next(stream)
            finally:
                await _shielded_close(stream)
        return JSONResponse(oa.completion(result, model=body.model, id=oa.completion_id()))

    add_decisions_route(app, chain, config, gate)
    return app


def _model_card(chain: ELMDChain, config: ServeConfig) -> dict[str, Any]:
    return {
        "id": config.model_id,
        "object": "model",
        "created": 0,
        "owned_by": "elmd-sdk",
        "emotions": list(chain.labels),
        "video": chain.video_enabled,
    }


async def _events(
    stream: Iterator[ELMDResult], chunk: Any, model: str, include_usage: bool, request_scope: contextlib.ExitStack
) -> AsyncIterator[str]:
    """Server-sent events of one reply: the first delta carries the emotion, the last the finish reason."""
    id = oa.completion_id()
    usage: dict[str, int] | None = None
    reason = "stop"
    try:
        opening = True
        while chunk is not _END:
            delta: dict[str, Any] = {"content": chunk.response}
            if opening:
                delta = {"role": "assistant", **delta, "emotion": chunk.emotion, "emotion_scores": chunk.emotion_scores}
                opening = False
            reason = chunk.finish_reason or reason
            usage = add_usage(usage, chunk.usage)
            if delta["content"] or len(delta) > 1:
                yield _sse(oa.chunk(delta, model=model, id=id))
            chunk = await _next(stream)
        await _shielded_close(stream)
        request_scope.close()  # the place is free before the client reads the end and sends its next request
        yield _sse(oa.chunk({}, model=model, id=id, finish_reason=reason))
        if include_usage:
            yield _sse(oa.chunk(None, model=model, id=id, usage=oa.usage(usage)))
        yield "data: [DONE]\n\n"
    except Exception as error:  # mid-stream: the status is already sent, so the error goes as an event
        log.exception("stream failed")
        message = error.problem if isinstance(error, InputError) else "internal error while answering (see the log)"
        yield _stream_end(message)
    finally:
        await _shielded_close(stream)
        request_scope.close()


async def _next(stream: Iterator[ELMDResult]) -> Any:
    """The next chunk, computed in a worker thread (``_END`` at the end)."""
    return await run_in_threadpool(next, stream, _END)


async def _shielded_close(stream: Iterator[ELMDResult]) -> None:
    """Close the chain's stream (which stops its decoding), even when the request was cancelled."""
    with anyio.CancelScope(shield=True):
        await run_in_threadpool(getattr(stream, "close", lambda: None))


_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}


def _error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


def _error(error: RequestError, headers: Mapping[str, str] | None = None) -> Response:
    """The OpenAI error response; ASCII JSON, so that text echoed from the request (a field name with a lone
    surrogate) cannot break its encoding."""
    body = oa.error_body(error.message, type=_error_type(error.status), param=error.param, code=error.code)
    return Response(json.dumps(body), status_code=error.status, headers=headers, media_type="application/json")


def _bad_field(problem: str, param: str | None) -> RequestError:
    """A 400 for a bad request field: the message starts with the field's name."""
    return RequestError(400, f"{param}: {problem}" if param else problem, param=param)


def _param(loc: tuple[int | str, ...]) -> str | None:
    """A pydantic error location as the request field it names: ``messages[0].content``."""
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc if part != "body")
    return path.lstrip(".") or None


def _http_message(request: Request, error: HTTPException) -> str:
    where = f"{request.method} {request.url.path}"
    if error.status_code == 404:
        return f"unknown URL ({where})"
    if error.status_code == 405:
        allowed = (error.headers or {}).get("Allow")
        return f"method not allowed ({where})" + (f"; this URL takes {allowed}" if allowed else "")
    if error.__cause__ is not None:  # FastAPI could not parse the body
        return _not_json(_unparsable(error.__cause__))
    return str(error.detail)


def _unparsable(cause: BaseException) -> str:
    """Why ``json.loads`` failed on the body, other than a syntax error (which FastAPI reports itself)."""
    if isinstance(cause, RecursionError):
        return "it nests too deeply"
    if isinstance(cause, UnicodeDecodeError):
        return f"it is not UTF-8 ({cause.reason} at byte {cause.start})"
    if isinstance(cause, ValueError):  # the only other ValueError of json.loads: Python's integer digit limit
        return f"a number in it has more than {sys.get_int_max_str_digits()} digits"
    return "it could not be read"


def _not_json(reason: str) -> str:
    return f"the body is not valid JSON: {reason}"


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _stream_end(message: str) -> str:
    """The last events of a stream that was ended before its reply was complete."""
    return _sse(oa.error_body(message, type="server_error")) + "data: [DONE]\n\n"
