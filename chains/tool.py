"""The chain as a LangChain tool for agents: the :class:`~elmd_sdk.chains.input.ELMDInput` fields in (``video`` only
when the bundle can use a clip; unknown arguments refused), the reply as data out."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from langchain_core._api import LangChainBetaWarning
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import BaseTool
from pydantic import BaseModel, ConfigDict, create_model

from elmd_sdk.answer.result import ELMDResult
from elmd_sdk.chains.input import ELMDInput

if TYPE_CHECKING:
    from elmd_sdk.chains.chain import ELMDChain


def chain_tool(
    chain: ELMDChain,
    args_schema: type[BaseModel] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    arg_types: dict[str, type] | None = None,
) -> BaseTool:
    """``chain`` as a tool returning ``{"emotion", "emotion_scores", "response", "utterance_emotion"}``."""
    as_data = RunnableLambda(tool_output, name="elmd_tool_output")
    labels = ", ".join(chain.labels)
    with warnings.catch_warnings():  # as_tool is marked beta by LangChain
        warnings.simplefilter("ignore", LangChainBetaWarning)
        return (chain | as_data).as_tool(
            args_schema=args_schema or tool_schema(chain.video_enabled),
            name=name or "emotional_reply",
            description=description
            or "Write an empathetic reply to what a person just said, with the emotion the reply should carry "
            f"(one of: {labels}). Give the utterance, optionally earlier turns and a background; 'emotion' forces "
            "the reply's emotion, 'allowed_emotions' restricts it. Returns the emotion, the probability of each "
            "label, the response and the emotion recognised in the utterance.",
            arg_types=arg_types,
        )


def tool_schema(video_enabled: bool) -> type[BaseModel]:
    """:class:`ELMDInput` without ``video`` when no clip can be used, refusing unknown arguments."""
    fields: dict[str, Any] = {
        name: (info.annotation, info)
        for name, info in ELMDInput.model_fields.items()
        if name != "video" or video_enabled
    }
    return create_model("EmotionalReplyInput", __config__=ConfigDict(extra="forbid"), **fields)


def tool_output(result: ELMDResult) -> dict[str, Any]:
    """What the agent tool returns: the reply as data."""
    return {
        "emotion": result.emotion,
        "emotion_scores": result.emotion_scores,
        "response": result.response,
        "utterance_emotion": result.utterance_emotion,
    }
