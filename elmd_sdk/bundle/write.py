"""Write a trained stage (or an untuned bundle: :mod:`elmd_sdk.bundle.create`) as a bundle folder that
``ELMDChain.from_bundle`` loads.

The ERM and index are copied in, so the bundle is self-contained; weights are safetensors + JSON; ``bundle.json`` is
written last. The caller writes into a fresh folder that then replaces the old bundle as a whole
(:func:`elmd_sdk.io.atomic_folder`), so a kill leaves the old complete bundle or the new one.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elmd_sdk.bundle.manifest import (
    ERM_DIR,
    INDEX_DIR,
    PREFIX_DIR,
    PROJECTOR_DIR,
    BundleManifest,
    save_manifest,
)
from elmd_sdk.models.precision import Precision
from elmd_sdk.models.prefix import PrefixEncoder
from elmd_sdk.video import VideoProjector


def resolve_llm_name(name: str | None) -> str | None:
    """The LLM reference recorded in the bundle: a local path made absolute, a hub name as given, None = default.

    The LLM is loaded under exactly this string, so the projector's recorded LLM identity matches at inference.
    """
    if name is None:
        return None
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else name


@dataclass
class TrainedParts:
    """What a stage produced (an untuned bundle: no projector, no prefix) and what it was made with, for the
    manifest."""

    base_llm: str | None  # the LLM reference the weights were trained on (None = embedded default)
    base_llm_config_sha256: str
    language: str
    labels: Sequence[str]
    index: Path | None  # index folder of the demonstrations (None: trained without retrieval)
    erm: Path | None  # ERM folder the index was built with (None: a plain sentence encoder)
    visual_encoder: str | None
    visual_encoder_fingerprint: dict[str, Any] | None
    projector: VideoProjector | None
    frames: int  # m frames per clip the projector saw in training
    prefix: PrefixEncoder | None
    training_data_sha256: str | None  # None: no trained weights
    description: str
    emotion_log_prior: Sequence[float] | None = None  # per label: the kept weights' validation prior
    generation: dict[str, Any] = field(default_factory=dict)  # decoding settings the bundle sets (GenerationConfig)
    precision: Precision = field(default_factory=Precision)  # dtype and quantization the base LLM loads with


def write_bundle(out_dir: str | Path, parts: TrainedParts, name: str) -> Path:
    """Write projector/, prefix/, erm/, index/ and then bundle.json into the new, empty folder ``out_dir`` for a
    bundle called ``name``; returns the manifest path."""
    out_dir = Path(out_dir)
    if parts.index is not None:
        shutil.copytree(parts.index, out_dir / INDEX_DIR)
    if parts.erm is not None:
        shutil.copytree(parts.erm, out_dir / ERM_DIR)
    if parts.projector is not None:
        parts.projector.save(out_dir / PROJECTOR_DIR)
    if parts.prefix is not None:
        parts.prefix.save(out_dir / PREFIX_DIR)
    manifest = BundleManifest(
        name=name,
        base_llm_config_sha256=parts.base_llm_config_sha256,
        labels=list(parts.labels),
        language=parts.language,
        base_llm=parts.base_llm,
        erm_dir=ERM_DIR if parts.erm is not None else None,
        index_dir=INDEX_DIR if parts.index is not None else None,
        visual_encoder=parts.visual_encoder,
        visual_encoder_fingerprint=parts.visual_encoder_fingerprint if parts.projector is not None else None,
        projector_dir=PROJECTOR_DIR if parts.projector is not None else None,
        frames=parts.frames if parts.projector is not None else None,
        prefix_dir=PREFIX_DIR if parts.prefix is not None else None,
        pre_seq_len=parts.prefix.config.pre_seq_len if parts.prefix is not None else None,
        training_data_sha256=parts.training_data_sha256,
        description=parts.description,
        generation=dict(parts.generation),
        dtype=parts.precision.dtype,
        quantize=parts.precision.quantize,
        emotion_log_prior=(
            None
            if parts.emotion_log_prior is None
            else dict(zip(parts.labels, map(float, parts.emotion_log_prior), strict=True))
        ),
    )
    return save_manifest(out_dir, manifest)
