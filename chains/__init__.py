"""The ELMD chain (paper Figure 4): six-part prompt, output parser, chain and the embedded default bundle.

Names load lazily, so reading this package's data files does not import LangChain or torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from elmd_sdk.answer.reading import StreamingAnswerParser
    from elmd_sdk.answer.result import ELMDResult
    from elmd_sdk.answer.wording import render_answer
    from elmd_sdk.chains.chain import ELMDChain, ELMDInput, HistoryTurn, default_bundle_path
    from elmd_sdk.chains.decisions import ELMDDecisions
    from elmd_sdk.chains.parser import ELMDOutputParser
    from elmd_sdk.chains.prompt import build_prompt

_EXPORTS = {
    "ELMDChain": "elmd_sdk.chains.chain",
    "ELMDInput": "elmd_sdk.chains.chain",
    "HistoryTurn": "elmd_sdk.chains.chain",
    "default_bundle_path": "elmd_sdk.chains.chain",
    "ELMDDecisions": "elmd_sdk.chains.decisions",
    "ELMDOutputParser": "elmd_sdk.chains.parser",
    "ELMDResult": "elmd_sdk.answer.result",
    "StreamingAnswerParser": "elmd_sdk.answer.reading",
    "build_prompt": "elmd_sdk.chains.prompt",
    "render_answer": "elmd_sdk.answer.wording",
}

__all__ = [
    "ELMDChain",
    "ELMDDecisions",
    "ELMDInput",
    "ELMDOutputParser",
    "ELMDResult",
    "HistoryTurn",
    "StreamingAnswerParser",
    "build_prompt",
    "default_bundle_path",
    "render_answer",
]


def __getattr__(name: str) -> Any:
    """Import an exported name on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'elmd_sdk.chains' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
