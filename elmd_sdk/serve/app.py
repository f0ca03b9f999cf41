"""The OpenAI-compatible HTTP app over one ELMD chain (FastAPI), and the web chat page.

Every request runs the chain in a worker thread; the chat model's batch engine (``ELMDChatModel.batched``) decodes
concurrent replies together. At most ``max_concurrency`` requests are inside at once; one more gets 429 with
``Retry-After`` at once instead of waiting. The server keeps no conversation state: the history comes with each
request, so replicas behind a load balancer are interchangeable.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from elmd_sdk.chains.chain import ELMDChain
from elmd_sdk.chains.parser import ELMDResult, add_usage
from elmd_sdk.errors import InputError
from elmd_sdk.serve import openai_types as oa
from elmd_sdk.serve.config import ServeConfig
from elmd_sdk.serve.mapping import RequestError, chain_turn

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


def create_app(chain: ELMDChain, config: ServeConfig) -> FastAPI:
    """The app serving ``chain`` as model ``config.model_id``: ``/v1/chat/completions``, ``/v1/models``,
    ``/health`` and the chat page at ``/``."""
    gate = _Gate(config.max_concurrency)
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
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        """Body size and API key checks, before any body is read."""
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > config.max_body_bytes:
            return _error(RequestError(413, f"request body over {config.max_body_bytes} bytes"))
        if config.api_key and request.url.path.startswith("/v1/"):
            scheme, _, key = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(key.strip().encode(), config.api_key.encode()):
                return _error(RequestError(401, "missing or wrong API key (Authorization: Bearer KEY)",
                                           code="invalid_api_key"))  # fmt: skip
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = [str(part) for part in first.get("loc", ()) if part != "body"]
        message = first.get("msg", "invalid request")
        param = ".".join(where) or None
        if first.get("type") == "json_invalid":
            message, param = f"the body is not valid JSON: {first.get('ctx', {}).get('error', message)}", None
        return _error(RequestError(400, f"{param}: {message}" if param else message, param=param))

    @app.exception_handler(RequestError)
    async def refused(_request: Request, error: RequestError) -> JSONResponse:
        return _error(error, retry_after=config.retry_after_s)

    @app.exception_handler(InputError)
    async def bad_input(_request: Request, error: InputError) -> JSONResponse:
        return _error(RequestError(400, error.problem, param=error.field))

    @app.exception_handler(Exception)
    async def failed(_request: Request, error: Exception) -> JSONResponse:
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
        if body.model != config.model_id:
            raise RequestError(404, f"no model {body.model!r}; this server has {config.model_id!r}",
                               param="model", code="model_not_found")  # fmt: skip
        gate.enter()
        request_scope = contextlib.ExitStack()  # what the request holds until its reply ends: its place, its video
        request_scope.callback(gate.leave)
        try:
            turn = request_scope.enter_context(chain_turn(body, config, video_enabled=chain.video_enabled))
            target = chain if body.retrieval else chain.model_copy(update={"use_retrieval": False})
            stream = target.stream(turn.input, **turn.options)
            first = await _next(stream)  # input errors surface here, as a 4xx, before any byte is sent
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
        yield _sse(oa.error_body(message, type="server_error"))
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


def _error(error: RequestError, retry_after: int | None = None) -> JSONResponse:
    headers = {"Retry-After": str(retry_after)} if error.status == 429 and retry_after is not None else None
    body = oa.error_body(error.message, type=_error_type(error.status), param=error.param, code=error.code)
    return JSONResponse(body, status_code=error.status, headers=headers)


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"
