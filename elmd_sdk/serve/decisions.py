"""``POST /v1/decisions``: OpenAI's Decisions API over the served chain
(:class:`~elmd_sdk.chains.decisions.ELMDDecisions`).

The request is checked and answered in a worker thread; the options are scored in the chat model's batch engine
(between the decode steps of the replies in flight, each request's questions in one piece of its work). Bad input is
a 400 naming the field (the body's limits: :class:`~elmd_sdk.chains.decision_types.DecisionLimits`), another model
a 404; a request takes a place among ``--max-concurrency`` as a chat request does.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from elmd_sdk.chains.chain import ELMDChain
from elmd_sdk.chains.decision_types import DecisionLimits
from elmd_sdk.chains.decisions import ELMDDecisions
from elmd_sdk.serve.config import ServeConfig
from elmd_sdk.serve.mapping import check_model


def add_decisions_route(app: FastAPI, chain: ELMDChain, config: ServeConfig, gate: Any) -> None:
    """Serve ``POST /v1/decisions`` for ``chain`` as model ``config.model_id``; ``gate`` counts the requests inside."""
    decider = ELMDDecisions(
        chain=chain, model=config.model_id, limits=DecisionLimits(max_input_messages=config.max_messages)
    )

    @app.post("/v1/decisions")
    async def decisions(body: dict[str, Any]) -> JSONResponse:
        check_model(body.get("model"), config)
        gate.enter()
        try:
            decision = await run_in_threadpool(decider.invoke, body)
        finally:
            gate.leave()
        return JSONResponse(decision.model_dump(mode="json"))
