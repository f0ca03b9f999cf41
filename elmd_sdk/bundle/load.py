"""Load what a bundle names: the base LLM (+ p-tuning prefix), the video projector with its visual encoder, and
the ERM with its index, each checked against the manifest before use.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elmd_sdk.bundle.manifest import (
    MANIFEST_FILE,
    BundleManifest,
    BundlePaths,
    load_bundle,
    verify_components,
)
from elmd_sdk.models.generation import check_generation
from elmd_sdk.models.precision import Precision, check_precision

if TYPE_CHECKING:
    from elmd_sdk.models.chat_model import ELMDChatModel
    from elmd_sdk.retrievers import EmotionalRetriever


@dataclass(frozen=True)
class LoadedBundle:
    """A bundle's loaded components."""

    manifest: BundleManifest
    paths: BundlePaths
    chat_model: ELMDChatModel
    retriever: EmotionalRetriever | None


def load_components(
    bundle: str | PathLike[str],
    *,
    use_retrieval: bool = True,
    use_video: bool = True,
    k: int = 1,
    device: str | None = None,
    use_trained: bool = True,
    dtype: str | None = None,
    quantize: str | None = None,
    **generation: Any,
) -> LoadedBundle:
    """Load and cross-check every component of a bundle (parts switched off by the ablations are skipped).

    ``use_trained=False`` leaves out the trained prefix and projector: the untuned base LLM with the bundle's
    prompt, index and decoding, the baseline a trained bundle is compared with. ``dtype`` and ``quantize`` override
    the bundle's (``None``: the bundle's own; :mod:`elmd_sdk.models.precision`)."""
    manifest, paths = load_bundle(bundle)
    source = paths.root / MANIFEST_FILE
    precision = check_precision(dtype or manifest.dtype, quantize or manifest.quantize)
    settings = {**manifest.generation, **check_generation(generation)}
    if not use_trained:
        paths = dataclasses.replace(paths, prefix=None, projector=None)
    chat = _load_chat_model(
        manifest, paths, use_video=use_video, device=device, precision=precision, settings=settings, source=source
    )
    retriever = None
    if use_retrieval and paths.index is not None:
        from elmd_sdk.retrievers import EmotionalRetriever
        from elmd_sdk.retrievers.encoder import ERMEncoder

        encoder = ERMEncoder.load(paths.erm) if paths.erm is not None else None
        retriever = EmotionalRetriever.load(paths.index, k=k, encoder=encoder)
    return LoadedBundle(manifest=manifest, paths=paths, chat_model=chat, retriever=retriever)


def _load_chat_model(
    manifest: BundleManifest,
    paths: BundlePaths,
    *,
    use_video: bool,
    device: str | None,
    precision: Precision,
    settings: dict[str, Any],
    source: Path,
) -> ELMDChatModel:
    """The base LLM checked against the manifest, with the bundle's prefix and (if used) projector."""
    from elmd_sdk.models.chat_model import ELMDChatModel
    from elmd_sdk.models.llm import llm_fingerprint, load_llm

    model, tokenizer = load_llm(paths.base_llm, dtype=precision.dtype, quantize=precision.quantize, device=device)
    fingerprint = llm_fingerprint(model)
    verify_components(manifest, llm_fingerprint=fingerprint, source=source)
    if paths.prefix is not None:
        from elmd_sdk.models.prefix import PrefixEncoder, attach_prefix

        prefix = PrefixEncoder.load(paths.prefix, model=model)
        verify_components(manifest, pre_seq_len=prefix.config.pre_seq_len, source=source)
        attach_prefix(model, prefix.eval())  # eval: no prefix dropout at inference
    projector = visual = None
    if use_video and paths.projector is not None:
        from elmd_sdk.video import VideoProjector, load_visual_encoder

        visual = load_visual_encoder(manifest.visual_encoder, **({"device": device} if device else {}))
        verify_components(manifest, visual_encoder_fingerprint=visual.fingerprint(), source=source)
        projector = VideoProjector.load(paths.projector, encoder=visual.fingerprint(), llm=fingerprint)
        projector.to(next(model.parameters()).device)
    if projector is not None and manifest.frames is not None:
        settings = {"frames": manifest.frames, **settings}  # sample the m frames the projector was trained with
    return ELMDChatModel(
        model_name=manifest.base_llm,
        prefix_path=str(paths.prefix) if paths.prefix is not None else None,
        projector_path=str(paths.projector) if projector is not None else None,
        visual_encoder_name=manifest.visual_encoder if visual is not None else None,
        hf_model=model,
        tokenizer=tokenizer,
        projector=projector,
        visual_encoder=visual,
        dtype=precision.dtype,
        quantize=precision.quantize,
        **settings,
    )
