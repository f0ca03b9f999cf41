"""Set-up both stages share: the frozen LLM, the retriever, the feature cache and the examples built from samples."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from elmd_sdk.data.records import Sample, VideoRef
from elmd_sdk.errors import InputError
from elmd_sdk.io import sha256_file
from elmd_sdk.retrievers.index import MANIFEST_FILE as INDEX_MANIFEST
from elmd_sdk.trainers.examples import (
    Example,
    PromptConfig,
    build_examples,
    label_candidates,
    retrieve_demonstrations,
)
from elmd_sdk.trainers.feature_cache import FeatureCache
from elmd_sdk.video import ProjectorConfig, VideoProjector, VisualEncoder


def llm_dtype(accelerator: Any) -> torch.dtype:
    """Weight dtype of the frozen LLM: the mixed-precision dtype (halves its memory), else float32."""
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(str(accelerator.mixed_precision), torch.float32)


def load_frozen_llm(
    name: str | None, accelerator: Any, trust_remote_code: bool = False
) -> tuple[Any, Any, dict[str, Any]]:
    """Load the LLM (weights in the mixed-precision dtype) with every base weight frozen: (model, tokenizer,
    fingerprint), the fingerprint being what bundles, projectors and checkpoints record of the LLM."""
    from elmd_sdk.models.llm import llm_fingerprint, load_llm

    llm, tokenizer = load_llm(name, trust_remote_code=trust_remote_code, dtype=llm_dtype(accelerator))
    llm.requires_grad_(False)
    return llm, tokenizer, llm_fingerprint(llm)


def fit_prompt(prompt: PromptConfig, llm: Any) -> PromptConfig:
    """``prompt`` with ``max_length`` filled in from the LLM's context window (as the chain fits prompts at
    inference: :func:`elmd_sdk.models.rendering.context_window`) when it is unset."""
    from elmd_sdk.models.rendering import context_window

    return prompt if prompt.max_length is not None else replace(prompt, max_length=context_window(llm))


def open_feature_cache(
    visual_encoder: VisualEncoder | None, name: str | None, frames: int, folder: str | None
) -> FeatureCache:
    """The feature cache of ``visual_encoder``, loaded by ``name`` when not given already loaded."""
    if visual_encoder is None:
        from elmd_sdk.video import load_visual_encoder

        visual_encoder = load_visual_encoder(name)
    return FeatureCache(visual_encoder, frames, folder)


def fresh_projector(cache: FeatureCache, llm_fp: dict[str, Any], seed: int) -> VideoProjector:
    """A newly initialised projector (Eq. 9) from ``cache``'s encoder to the LLM, seeded: where REP starts."""
    from accelerate.utils import set_seed

    set_seed(seed)
    config = ProjectorConfig(
        q=cache.encoder.q, hidden_size=llm_fp["hidden_size"], encoder=cache.fingerprint, llm=llm_fp
    )
    return VideoProjector(config)


def open_retriever(index: str | Path | None, erm: str | Path | None = None) -> Any:
    """The EmotionalRetriever over ``index`` (k = 1), with the ERM in ``erm`` or the one the index records."""
    if index is None:
        return None
    from elmd_sdk.retrievers import EmotionalRetriever, ERMEncoder

    encoder = ERMEncoder.load(erm) if erm is not None else None
    return EmotionalRetriever.load(index, k=1, encoder=encoder)


def samples_sha256(samples: Sequence[Sample]) -> str:
    """Training-data hash: for a file in the native JSONL form this equals ``bundle.data_sha256([file])``."""
    text = "".join(json.dumps(s.to_dict(), ensure_ascii=False) + "\n" for s in samples)
    return hashlib.sha256(hashlib.sha256(text.encode("utf-8")).hexdigest().encode("ascii")).hexdigest()


@dataclass
class FrozenParts:
    """What a stage trains against, and its bundle records: the frozen LLM, the prompt wording, the clip features and
    the demonstration index."""

    llm_name: str | None  # as the bundle records it (resolve_llm_name)
    llm: Any
    tokenizer: Any
    llm_fp: dict[str, Any]
    prompt: PromptConfig
    frames: int
    cache: FeatureCache | None  # None: no video
    visual_encoder: str | None  # the encoder's name as the bundle records it
    index: Path | None  # None: no retrieval
    erm: Path | None  # the ERM the index was built with (None: a plain encoder)


def stage_identity(stage: str, frozen: FrozenParts, accelerator: Any, data_hash: str, **extra: Any) -> dict[str, Any]:
    """The settings of a run that a resume must share: the common ones of both stages plus the stage's ``extra``."""
    return {
        "stage": stage,
        "llm": frozen.llm_fp["config_sha256"],
        "precision": str(accelerator.mixed_precision),
        "visual_encoder": frozen.cache.fingerprint if frozen.cache is not None else None,
        "frames": frozen.frames,
        "prompt": asdict(frozen.prompt),
        **extra,
        "index": sha256_file(frozen.index / INDEX_MANIFEST) if frozen.index is not None else None,
        "data": data_hash,
    }


@dataclass
class PreparedData:
    """Examples of both splits, the label answers for evaluation, and the clip -> V_c lookup."""

    train: list[Example]
    valid: list[Example]
    candidates: list[list[int]]
    video_features: Callable[[VideoRef], torch.Tensor]


def prepare_data(
    accelerator: Any,
    frozen: FrozenParts,
    train: Sequence[Sample],
    valid: Sequence[Sample],
    retriever: Any,
    *,
    with_response: bool,
    progress: bool | None,
) -> PreparedData:
    """Retrieve demonstrations, build examples and fill the feature cache (sharded over processes, then a barrier)."""
    from elmd_sdk.video import spatio_temporal_pool

    cache, prompt = frozen.cache, frozen.prompt
    if prompt.use_video and cache is None:
        raise InputError("a stage with video needs a visual encoder and feature cache", field="use_video")
    video_tokens = cache.frames + cache.encoder.o if cache is not None else 0

    def examples(samples: Sequence[Sample]) -> list[Example]:
        demos = retrieve_demonstrations(retriever, samples) if retriever is not None else [None] * len(samples)
        return build_examples(
            samples, demos, frozen.tokenizer, prompt, with_response=with_response, video_tokens=video_tokens
        )

    train_examples, valid_examples = examples(train), examples(valid)
    if cache is not None:
        clips = [e.video for e in [*train_examples, *valid_examples] if e.video is not None]
        cache.fill(clips, rank=accelerator.process_index, world_size=accelerator.num_processes, progress=progress)
    accelerator.wait_for_everyone()

    def video_features(video: VideoRef) -> torch.Tensor:
        if cache is None:
            raise InputError("this stage runs without video", field="use_video")
        return spatio_temporal_pool(cache.get(video))  # (m + o, q)

    return PreparedData(train_examples, valid_examples, label_candidates(frozen.tokenizer, prompt), video_features)
