"""Frozen visual encoders (paper Eq. 5): m RGB frames -> X of shape (m, o, q), o tokens of q features per frame.

The interface lives in :mod:`elmd_sdk.video.encoders_base` (a leaf the backends import); this module picks a backend.
"""

from __future__ import annotations

from typing import Any

from elmd_sdk.video.encoders_base import VisualEncoder

__all__ = ["VisualEncoder", "load_visual_encoder"]


def load_visual_encoder(name_or_path: str | None = None, **kwargs: Any) -> VisualEncoder:
    """Load a frozen visual encoder: ``None`` (or ``"default"``) gives the offline face-expression default, anything
    else a transformers vision tower (BLIP-2 ViT + Q-Former, CLIP, SigLIP or ViT) by local path or hub name.

    ``kwargs`` go to the backend's constructor (``device``, ``batch_size``; ``dtype`` for transformers towers).
    """
    if name_or_path is None or name_or_path == "default":
        from elmd_sdk.video.encoders_default import FaceExpressionEncoder

        return FaceExpressionEncoder(**kwargs)
    from elmd_sdk.video.encoders_hf import TransformersVisionEncoder

    return TransformersVisionEncoder(name_or_path, **kwargs)
