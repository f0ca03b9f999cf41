"""Splicing video tokens E_v into an LLM's input embeddings at ``<video>`` placeholders (paper 3.4, Figure 4).

The prompt text is cut at each placeholder and every text piece is tokenized on its own, so how a tokenizer would
split the placeholder string itself never matters. Inference (the chat model) and training (REP/EERG) both build
their inputs with these functions, so the two see identical token ids and positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from elmd_sdk.errors import ElmdError

VIDEO_PLACEHOLDER = "<video>"
"""Marks where the video tokens E_v go in a prompt; removed when the prompt comes without a video."""


def tokenize_pieces(tokenizer: Any, text: str, placeholder: str = VIDEO_PLACEHOLDER) -> list[list[int]]:
    """Token ids of the text pieces around each placeholder: k placeholders give k + 1 pieces (some may be empty).

    Each piece is tokenized without added special tokens, as ``apply_chat_template(tokenize=True)`` does, so a text
    with no placeholder gives exactly the ids of a plain chat-template tokenization.
    """
    return [
        tokenizer(piece, add_special_tokens=False)["input_ids"] if piece else [] for piece in text.split(placeholder)
    ]


@dataclass(frozen=True)
class SplicedInputs:
    """An LLM input with video tokens in place: embeddings, mask, and where each video's tokens sit."""

    inputs_embeds: torch.Tensor  # (1, T, hidden)
    attention_mask: torch.Tensor  # (1, T)
    video_spans: tuple[tuple[int, int], ...]  # [start, end) positions of each video's rows in inputs_embeds


def splice_video_embeds(
    embed_tokens: nn.Module, pieces: Sequence[Sequence[int]], videos: Sequence[torch.Tensor]
) -> SplicedInputs:
    """Interleave the embedded text pieces with the video tokens: piece 0, E_v 0, piece 1, E_v 1, ..., piece k.

    ``embed_tokens`` is the LLM's input embedding (``model.get_input_embeddings()``); each video is an
    ``(n_i, hidden)`` tensor, cast to the embedding's dtype and device.
    """
    if len(pieces) != len(videos) + 1:
        raise ElmdError(f"{len(videos)} video(s) need {len(videos) + 1} text pieces, got {len(pieces)}")
    weight: torch.Tensor = next(embed_tokens.parameters())  # (vocab, hidden)
    hidden = weight.shape[-1]
    for i, video in enumerate(videos):
        if video.ndim != 2 or video.shape[-1] != hidden:
            raise ElmdError(f"video {i}: tokens must have shape (n, {hidden}) for this LLM, got {tuple(video.shape)}")
    flat = [token for piece in pieces for token in piece]
    ids = torch.tensor(flat, dtype=torch.long, device=weight.device)  # (L,)
    text_embeds = embed_tokens(ids).split([len(piece) for piece in pieces])  # k + 1 tensors (len_i, hidden)
    parts: list[torch.Tensor] = [text_embeds[0]]
    spans: list[tuple[int, int]] = []
    position = len(pieces[0])
    for video, text in zip(videos, text_embeds[1:], strict=True):
        spans.append((position, position + video.shape[0]))
        parts += [video.to(device=weight.device, dtype=text.dtype), text]
        position += video.shape[0] + text.shape[0]
    inputs_embeds = torch.cat(parts).unsqueeze(0)  # (1, T, hidden)
    mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=weight.device)  # (1, T)
    return SplicedInputs(inputs_embeds, mask, tuple(spans))
