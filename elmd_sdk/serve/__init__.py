"""``elmd-sdk serve``: any bundle as an OpenAI-compatible HTTP service that returns the emotion with the reply.

``create_app`` loads lazily, so importing the package (the CLI reads ``ServeConfig``'s defaults at start-up) does
not import FastAPI, LangChain or torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from elmd_sdk.serve.config import ServeConfig

if TYPE_CHECKING:
    from elmd_sdk.serve.app import create_app

__all__ = ["ServeConfig", "create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from elmd_sdk.serve.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
