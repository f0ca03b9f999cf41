"""Response Emotion Prediction, REP (paper 3.4, Eq. 10): train the video projector alone.

The visual encoder and the LLM stay frozen; the input is the full six-part prompt (with the ERM demonstration
retrieved from another dialogue) and E_v; the loss covers only the tokens of the response emotion as
``render_answer(emotion)`` writes it. Paper defaults: batch 16, lr 2e-5, AdamW. With ``use_video=False`` nothing
trains: the run reports the frozen LLM's validation scores, the "w/o V" baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elmd_sdk.bundle.write import resolve_llm_name
from elmd_sdk.data.records import Sample
from elmd_sdk.errors import InputError
from elmd_sdk.retrievers.index import index_erm_dir
from elmd_sdk.trainers.examples import PromptConfig
from elmd_sdk.trainers.loop import ParamGroup
from elmd_sdk.trainers.pipeline import (
    FrozenParts,
    fit_prompt,
    fresh_projector,
    load_frozen_llm,
    open_feature_cache,
    open_retriever,
    prepare_data,
    samples_sha256,
)
from elmd_sdk.trainers.stage import StageResult
from elmd_sdk.trainers.stage_bundle import Trained, train_to_bundle
from elmd_sdk.trainers.train_config import TrainConfig, make_accelerator
from elmd_sdk.video import VisualEncoder


@dataclass
class RepConfig:
    """What REP trains on and how (defaults: paper 4.3)."""

    index: str | None = None  # demonstration index (part R); None = the "w/o ERM" ablation
    llm: str | None = None  # load_llm name or path; None = the embedded SmolLM2-135M-Instruct
    visual_encoder: str | None = None  # load_visual_encoder name or path; None = the offline default
    frames: int = 8  # m frames per clip: paper 3.4 names m but gives no value; 8 is this project's default
    feature_cache: str | None = None  # folder of cached X; None = elmd-sdk's cache folder
    prompt: PromptConfig = field(default_factory=PromptConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    lr: float = 2e-5  # AdamW learning rate of the projector (paper 4.3)
    trust_remote_code: bool = False

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first impossible setting."""
        self.prompt.validate()
        self.train.validate()
        if not self.lr > 0:
            raise InputError("must be positive", field="lr")
        if self.frames < 1:
            raise InputError("must be at least 1", field="frames")


def train_rep(
    config: RepConfig,
    train: Sequence[Sample],
    valid: Sequence[Sample],
    out_dir: str | Path,
    *,
    resume: bool = False,
    visual_encoder: VisualEncoder | None = None,
    retriever: Any = None,
    data_sha256: str | None = None,
) -> StageResult:
    """Train the projector (Eq. 10) and write the bundle ``out_dir`` (projector/, index/, erm/, bundle.json).

    ``visual_encoder`` and ``retriever`` may be given already loaded (else ``config`` names them);
    ``data_sha256`` defaults to :func:`~elmd_sdk.trainers.pipeline.samples_sha256` of ``train``.
    """
    config.validate()
    clips = sum(sample.video is not None for sample in train)
    if not config.prompt.use_video or clips == 0:
        reason = "--no-video is set" if not config.prompt.use_video else f"none of the {len(train)} samples has a video"
        raise InputError(
            f"REP trains only the video projector (Eq. 10), and {reason}: there is nothing to train. Give the data "
            "its clips (elmd-sdk data prepare --video-root DIR), or skip REP: train eerg without --from is "
            "Table 3's w/o REP",
            field="data",
        )
    accelerator = make_accelerator(config.train)
    llm_name = resolve_llm_name(config.llm)
    llm, tokenizer, llm_fp = load_frozen_llm(llm_name, accelerator, config.trust_remote_code)
    prompt = fit_prompt(config.prompt, llm)
    cache = None
    if prompt.use_video:
        cache = open_feature_cache(visual_encoder, config.visual_encoder, config.frames, config.feature_cache)
    index = Path(config.index) if config.index is not None else None
    frozen = FrozenParts(
        llm_name, llm, tokenizer, llm_fp, prompt, config.frames, cache, config.visual_encoder, index,
        index_erm_dir(index) if index is not None else None,
    )  # fmt: skip
    if retriever is None:
        retriever = open_retriever(index)
    data = prepare_data(
        accelerator, frozen, train, valid, retriever, with_response=False, progress=config.train.progress
    )
    projector = fresh_projector(cache, llm_fp, config.train.seed) if cache is not None else None
    groups = [ParamGroup("projector", list(projector.parameters()), config.lr)] if projector is not None else []
    return train_to_bundle(
        accelerator, "rep", frozen, data, Trained(projector, None, groups), config.train, Path(out_dir), resume,
        data_hash=data_sha256 or samples_sha256(train),
        description=f"REP (Eq. 10): projector trained on {len(train)} samples for {config.train.epochs} epochs",
        lr=config.lr,
    )  # fmt: skip
