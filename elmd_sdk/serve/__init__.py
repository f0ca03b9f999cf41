"""``elmd-sdk serve``: any bundle as an OpenAI-compatible HTTP service that returns the emotion with the reply."""

from elmd_sdk.serve.app import create_app
from elmd_sdk.serve.config import ServeConfig

__all__ = ["ServeConfig", "create_app"]
