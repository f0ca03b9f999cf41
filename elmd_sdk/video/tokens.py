"""The video-token path, one function a step: a clip or its frames -> X (Eq. 5) -> V_c (Eq. 6-8) -> E_v (Eq. 9).

The chat model runs it whole (:func:`video_tokens`); the training feature cache stores X (:func:`clip_features`)
and the training stage projects the pooled cache entries (:func:`project`), so inference and training compute E_v
the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from elmd_sdk.errors import ElmdError, InputError
from elmd_sdk.video.encoders import VisualEncoder
from elmd_sdk.video.frames import FrameSource, sample_frames
from elmd_sdk.video.pooling import spatio_temporal_pool
from elmd_sdk.video.projector import VideoProjector


def clip_features(
    encoder: VisualEncoder,
    source: FrameSource,
    *,
    frames: int,
    start: float | None = None,
    end: float | None = None,
) -> torch.Tensor:
    """Eq. 5: X of ``frames`` evenly spaced frames of a clip (a video file, a folder of images or the frames
    themselves), shape ``(m, o, q)``."""
    sampled = sample_frames(source, m=frames, start=start, end=end)  # (m, H, W, 3)
    return encoder.encode(sampled)  # (m, o, q)


def project(projector: VideoProjector | nn.Module, pooled: torch.Tensor) -> torch.Tensor:
    """Eq. 9: E_v of pooled features V_c ``(m + o, q)`` -> ``(m + o, hidden)``, on the projector's device and dtype."""
    weight = next(projector.parameters())
    return projector(pooled.to(device=weight.device, dtype=weight.dtype))


def video_tokens(
    projector: VideoProjector | nn.Module,
    encoder: VisualEncoder | None,
    source: FrameSource | None = None,
    *,
    pooled: torch.Tensor | None = None,
    frames: int,
    start: float | None = None,
    end: float | None = None,
) -> torch.Tensor:
    """E_v ``(m + o, hidden)`` of a clip (``source``), or of its precomputed pooled features V_c (``pooled``)."""
    if pooled is None:
        if encoder is None or source is None:
            raise ValueError("a clip needs a visual encoder and a source (or give its pooled features)")
        pooled = spatio_temporal_pool(clip_features(encoder, source, frames=frames, start=start, end=end))
    return project(projector, torch.as_tensor(pooled))  # (m + o, hidden)


def block_tokens(
    projector: VideoProjector | nn.Module | None,
    encoder: VisualEncoder | None,
    block: Mapping[str, Any],
    *,
    frames: int,
) -> torch.Tensor:
    """E_v ``(m + o, hidden)`` of a chat message's video block: ``{"path", "start", "end"}``, ``{"frames"}`` or
    ``{"pooled"}``; an error says which part the chat model lacks."""
    if projector is None:
        raise ElmdError(
            "this chat model has no video projector; load one with "
            "ELMDChatModel.load(..., projector=PATH) or drop the video from the message"
        )
    source = block.get("frames", block.get("path"))
    if "pooled" not in block:
        if encoder is None:
            raise ElmdError("this chat model has no visual encoder; pass visual_encoder= to ELMDChatModel.load")
        if source is None:
            raise InputError("a video block needs 'path', 'frames' or 'pooled'", field="video")
    return video_tokens(
        projector,
        encoder,
        source,
        pooled=block.get("pooled"),
        frames=frames,
        start=block.get("start"),
        end=block.get("end"),
    )  # (m + o, hidden)
