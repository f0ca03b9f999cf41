"""Splicing video tokens E_v into an LLM's input embeddings between the prompt's pieces (paper 3.4, Figure 4).

The pieces come from :func:`elmd_sdk.models.rendering.prompt_pieces`. Inference (the chat model) and training
(REP/EERG) both build their inputs with these functions, so the two see identical token ids and positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from elmd_sdk.errors import ElmdError


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
