"""Chat messages -> token pieces around the ``<video>`` placeholders: the one prompt rendering that inference (the
chat model), training (REP/EERG examples) and token counting (the chain's history fitting) share, and the context
window both fit prompts into.

Messages are converted to chat-template turns (video content blocks taken out, in placeholder order), rendered with
the tokenizer's chat template (generation prompt included), and the text is cut at each placeholder; every piece is
tokenized on its own, so how a tokenizer would split the placeholder string itself never matters. The video tokens
E_v go between the pieces (:func:`elmd_sdk.models.splice.splice_video_embeds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ChatMessage, HumanMessage, SystemMessage

from elmd_sdk.errors import ElmdError, InputError
from elmd_sdk.text_checks import check_text

VIDEO_PLACEHOLDER = "<video>"
"""Marks where the video tokens E_v go in a prompt; removed when the prompt comes without a video."""

_ROLES = ((SystemMessage, "system"), (HumanMessage, "user"), (AIMessage, "assistant"))
_UNSET = 10**7  # tokenizers without a length limit report a huge model_max_length


def context_window(model: Any, tokenizer: Any = None) -> int | None:
    """Most positions ``model`` takes: its config's ``max_position_embeddings`` / ``seq_length`` / ``n_positions``,
    else the tokenizer's ``model_max_length``; None when neither states one."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for name in ("max_position_embeddings", "seq_length", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and 0 < value < _UNSET:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < _UNSET else None


def prompt_pieces(tokenizer: Any, messages: Sequence[BaseMessage]) -> tuple[list[list[int]], list[dict[str, Any]]]:
    """The token ids of the rendered prompt around each placeholder (k videos give k + 1 pieces) and the video
    blocks in placeholder order."""
    turns, videos = split_conversation(messages)
    try:
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    except Exception as error:  # no template, or a template refusing these roles (jinja2 raises its own types)
        raise ElmdError(f"cannot render the chat prompt with this tokenizer's chat template: {error}") from error
    return tokenize_pieces(tokenizer, text), videos


def tokenize_pieces(tokenizer: Any, text: str, placeholder: str = VIDEO_PLACEHOLDER) -> list[list[int]]:
    """Token ids of the text pieces around each placeholder: k placeholders give k + 1 pieces (some may be empty).

    Each piece is tokenized without added special tokens, as ``apply_chat_template(tokenize=True)`` does, so a text
    with no placeholder gives exactly the ids of a plain chat-template tokenization.
    """
    return [
        tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else [] for piece in text.split(placeholder)
    ]


def _role(message: BaseMessage) -> str:
    """Chat-template role of a message: system, user or assistant (or a ChatMessage's own role)."""
    if isinstance(message, ChatMessage):
        return message.role
    for kind, role in _ROLES:
        if isinstance(message, kind):
            return role
    raise InputError(f"unsupported message type {message.type!r}; use system, human and ai messages", field="messages")


def split_conversation(messages: Sequence[BaseMessage]) -> tuple[list[dict[str, str]], list[dict[str, Any]]]:
    """Chat-template turns (with placeholders resolved) and the video blocks, in placeholder order; an
    :class:`InputError` names a message whose text is not valid Unicode (``messages[i].content``)."""
    turns: list[dict[str, str]] = []
    videos: list[dict[str, Any]] = []
    own_videos: list[int] = []
    for index, message in enumerate(messages):
        texts: list[str] = []
        count = 0
        for block in [message.content] if isinstance(message.content, str) else message.content:
            if isinstance(block, str):
                texts.append(check_text(block, f"messages[{index}].content"))
            elif block.get("type") == "text":
                texts.append(check_text(block["text"], f"messages[{index}].content"))
            elif block.get("type") == "video":
                videos.append(block)
                count += 1
            else:
                raise InputError(f"unsupported content block type {block.get('type')!r}", field="content")
        turns.append({"role": _role(message), "content": "".join(texts)})
        own_videos.append(count)
    placeholders = sum(turn["content"].count(VIDEO_PLACEHOLDER) for turn in turns)
    if not videos:
        for turn in turns:
            turn["content"] = turn["content"].replace(VIDEO_PLACEHOLDER, "")
    elif placeholders == 0:
        for turn, count in zip(turns, own_videos, strict=True):
            turn["content"] = (VIDEO_PLACEHOLDER + "\n") * count + turn["content"]
    elif placeholders != len(videos):
        raise InputError(
            f"{placeholders} '{VIDEO_PLACEHOLDER}' placeholder(s) in the text but {len(videos)} video block(s)",
            field="content",
        )
    return turns, videos
