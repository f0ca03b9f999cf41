"""Response Emotion Prediction, REP (paper 3.4, Eq. 10): train the video projector alone.

The visual encoder and the LLM stay frozen; the input is the full six-part prompt (with the ERM demonstration
retrieved from another dialogue) and E_v; the loss covers only the tokens of the response emotion as
``render_answer(emotion)`` writes it. Paper defaults: batch 16, lr 2e-5, AdamW. With ``use_video=False`` nothing
trains: the run reports the frozen LLM's validation scores, the "w/o V" baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from elmd_sdk.retrievers.index import MANIFEST_FILE as INDEX_MANIFEST
from elmd_sdk.trainers.bundle_writer import PROJECTOR_DIR, BundleParts, write_bundle
from elmd_sdk.trainers.examples import PromptConfig
from elmd_sdk.trainers.feature_cache import FeatureCache
from elmd_sdk.trainers.pipeline import (
    context_limit,
    index_erm_dir,
    load_frozen_llm,
    open_retriever,
    prepare_data,
    resolve_llm_name,
    samples_sha256,
)
from elmd_sdk.trainers.stage import (
    ParamGroup,
    Stage,
    StageResult,
    TrainConfig,
    finish_stage,
    finished_run,
    make_accelerator,
    run_identity,
    run_stage,
)
from elmd_sdk.trainers.stage_model import StageModel

from elmd_sdk.data.records import Sample
from elmd_sdk.errors import InputError
from elmd_sdk.io import sha256_file
from elmd_sdk.models.llm import llm_fingerprint
from elmd_sdk.video import ProjectorConfig, VideoProjector, VisualEncoder


@dataclass
class RepConfig:
    """What REP trains on and how (defaults: paper 4.3)."""

    index: str | None = None  # demonstration index (part R); None = the "w/o ERM" ablation
    llm: str | None = None  # load_llm name or path; None = the embedded SmolLM2-135M-Instruct
    visual_encoder: str | None = None  # load_visual_encoder name or path; None = the offline default
    frames: int = 8  # m frames per clip (paper 3.4)
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
    out_dir = Path(out_dir)
    accelerator = make_accelerator(config.train)
    llm_name = resolve_llm_name(config.llm)
    llm, tokenizer = load_frozen_llm(llm_name, accelerator, config.trust_remote_code)
    llm_fp = llm_fingerprint(llm)
    prompt = config.prompt
    if prompt.max_length is None:
        prompt = PromptConfig(prompt.language, prompt.labels, prompt.use_video, context_limit(llm))
    cache = None
    if prompt.use_video:
        if visual_encoder is None:
            from elmd_sdk.video import load_visual_encoder

            visual_encoder = load_visual_encoder(config.visual_encoder)
        cache = FeatureCache(visual_encoder, config.frames, config.feature_cache)
    if retriever is None:
        retriever = open_retriever(config.index)
    data_hash = data_sha256 or samples_sha256(train)
    identity = {
        "stage": "rep",
        "llm": llm_fp["config_sha256"],
        "precision": str(accelerator.mixed_precision),
        "visual_encoder": cache.fingerprint if cache is not None else None,
        "frames": config.frames,
        "prompt": asdict(prompt),
        "lr": config.lr,
        "index": sha256_file(Path(config.index) / INDEX_MANIFEST) if config.index is not None else None,
        "data": data_hash,
    }
    data = prepare_data(
        accelerator, train, valid, tokenizer, prompt, retriever, cache, with_response=False,
        progress=config.train.progress,
    )  # fmt: skip
    projector = None
    if cache is not None:
        from accelerate.utils import set_seed

        set_seed(config.train.seed)
        projector = VideoProjector(
            ProjectorConfig(q=cache.encoder.q, hidden_size=llm_fp["hidden_size"], encoder=cache.fingerprint, llm=llm_fp)
        )
    model = StageModel(llm, projector)
    groups = [ParamGroup("projector", list(projector.parameters()), config.lr)] if projector is not None else []
    stage = Stage("rep", model, groups, data.train, data.valid, data.candidates, data.video_features, identity)

    finished = finished_run(out_dir, "rep", run_identity(identity, config.train)) if resume else None
    if finished is not None:  # killed after it had finished: the bundle holds the result
        if projector is not None:
            projector.load_state_dict(VideoProjector.load(out_dir / PROJECTOR_DIR).state_dict())
        return StageResult(model.eval(), finished[0], finished[1], finished[1])
    result = run_stage(accelerator, stage, config.train, out_dir, resume)
    if result.completed and accelerator.is_main_process:
        write_bundle(
            out_dir,
            BundleParts(
                base_llm=llm_name,
                base_llm_config_sha256=llm_fp["config_sha256"],
                language=prompt.language,
                labels=prompt.labels,
                index=Path(config.index) if config.index is not None else None,
                erm=index_erm_dir(config.index) if config.index is not None else None,
                visual_encoder=config.visual_encoder,
                visual_encoder_fingerprint=cache.fingerprint if cache is not None else None,
                projector=projector,
                prefix=None,
                training_data_sha256=data_hash,
                description=f"REP (Eq. 10): projector trained on {len(train)} samples for {config.train.epochs} epochs",
            ),
        )
        finish_stage(out_dir, "rep", run_identity(identity, config.train), result)
    accelerator.wait_for_everyone()
    return result
