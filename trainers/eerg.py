"""Emotion-Enhanced Response Generation, EERG (paper 3.5, Eq. 11): p-tuning v2 prefix plus the projector.

Starts from a REP bundle: its projector (Eq. 9) keeps training together with a new p-tuning v2 prefix (trainable
key/values in every layer, ``pre_seq_len`` 128 as in ChatGLM2's recipe, in ChatGLM2's native multi-query layout for
ChatGLM2) or one loaded from ``prefix_init`` (our format or ChatGLM2's official p-tuning checkpoint). The input is the
same six-part prompt as REP; the target is the emotion followed by the response. Paper defaults: batch 16, lr 2e-2,
AdamW; the prefix and the projector may have their own learning rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from elmd_sdk.retrievers.index import MANIFEST_FILE as INDEX_MANIFEST
from elmd_sdk.trainers.bundle_writer import PREFIX_DIR, PROJECTOR_DIR, BundleParts, write_bundle
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

from elmd_sdk.bundle import MANIFEST_FILE, load_bundle, verify_components
from elmd_sdk.data.records import Sample
from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.io import sha256_file
from elmd_sdk.models.llm import llm_fingerprint
from elmd_sdk.models.prefix import PrefixConfig, PrefixEncoder, attach_prefix
from elmd_sdk.video import VideoProjector, VisualEncoder
from elmd_sdk.video.projector import WEIGHTS_FILE as PROJECTOR_WEIGHTS

DEFAULT_PRE_SEQ_LEN = 128


@dataclass
class EergConfig:
    """What EERG trains on and how (defaults: paper 4.3 and ChatGLM2's p-tuning recipe)."""

    from_bundle: str  # the REP bundle: base LLM, encoder, language, labels, index and the projector to continue
    index: str | None = None  # demonstration index; None = the REP bundle's
    llm: str | None = None  # None = the REP bundle's base LLM (another one is refused)
    visual_encoder: str | None = None  # None = the REP bundle's (another one is refused)
    frames: int = 8  # m frames per clip; use REP's
    feature_cache: str | None = None  # folder of cached X; None = elmd-sdk's cache folder (shared with REP)
    use_video: bool = True  # False: the "w/o V" ablation, only the prefix trains
    max_length: int | None = None  # most positions per example; None = the LLM's context length
    pre_seq_len: int | None = None  # prefix length; None = 128, or that of prefix_init
    prefix_projection: bool = False  # ChatGLM2's optional two-layer MLP over the prefix (off in its recipe)
    prefix_init: str | None = None  # starting prefix: our prefix folder or a ChatGLM2 p-tuning checkpoint
    lr: float = 2e-2  # AdamW learning rate (paper 4.3)
    lr_prefix: float | None = None  # overrides lr for the prefix
    lr_projector: float | None = None  # overrides lr for the projector
    train: TrainConfig = field(default_factory=TrainConfig)
    trust_remote_code: bool = False

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first impossible setting."""
        self.train.validate()
        for name in ("lr", "lr_prefix", "lr_projector"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InputError("must be positive", field=name)
        if self.frames < 1:
            raise InputError("must be at least 1", field="frames")
        if self.pre_seq_len is not None and self.pre_seq_len < 1:
            raise InputError("must be at least 1", field="pre_seq_len")


def _make_prefix(config: EergConfig, llm: Any) -> PrefixEncoder:
    """The starting prefix: loaded from ``prefix_init`` (checked against the LLM), else freshly initialised."""
    if config.prefix_init is not None:
        return PrefixEncoder.load(config.prefix_init, model=llm, pre_seq_len=config.pre_seq_len)
    length = config.pre_seq_len or DEFAULT_PRE_SEQ_LEN
    return PrefixEncoder(PrefixConfig.for_model(llm, length, config.prefix_projection))


def train_eerg(
    config: EergConfig,
    train: Sequence[Sample],
    valid: Sequence[Sample],
    out_dir: str | Path,
    *,
    resume: bool = False,
    visual_encoder: VisualEncoder | None = None,
    retriever: Any = None,
    data_sha256: str | None = None,
) -> StageResult:
    """Train prefix and projector (Eq. 11) from the REP bundle ``config.from_bundle``; write the bundle ``out_dir``.

    Raises :class:`~elmd_sdk.errors.MismatchError` when the LLM or visual encoder differ from the REP bundle's.
    """
    config.validate()
    out_dir = Path(out_dir)
    source = Path(config.from_bundle)
    if out_dir.resolve() == source.resolve():
        raise InputError("the EERG bundle must go to another folder than the REP bundle it starts from", file=out_dir)
    manifest, paths = load_bundle(source)
    accelerator = make_accelerator(config.train)
    llm_name = resolve_llm_name(config.llm) if config.llm is not None else paths.base_llm
    llm, tokenizer = load_frozen_llm(llm_name, accelerator, config.trust_remote_code)
    llm_fp = llm_fingerprint(llm)
    verify_components(manifest, llm_fingerprint=llm_fp, source=source / MANIFEST_FILE)
    encoder_name = config.visual_encoder if config.visual_encoder is not None else manifest.visual_encoder
    cache, projector = None, None
    if config.use_video:
        if paths.projector is None:
            raise InputError(
                "the REP bundle has no projector (trained with --no-video): train it with video, or EERG with "
                "--no-video",
                file=source / MANIFEST_FILE,
                field="projector_dir",
            )
        if visual_encoder is None:
            from elmd_sdk.video import load_visual_encoder

            visual_encoder = load_visual_encoder(encoder_name)
        cache = FeatureCache(visual_encoder, config.frames, config.feature_cache)
        verify_components(manifest, visual_encoder_fingerprint=cache.fingerprint, source=source / MANIFEST_FILE)
        projector = VideoProjector.load(paths.projector, encoder=cache.fingerprint)
        if projector.config.llm.get("config_sha256") != llm_fp["config_sha256"]:  # the LLM is checked by its config
            raise MismatchError(f"{paths.projector}: field 'llm.config_sha256': projector trained for another LLM")
    from accelerate.utils import set_seed

    set_seed(config.train.seed)
    prefix = _make_prefix(config, llm)
    attach_prefix(llm, prefix)
    index = Path(config.index) if config.index is not None else paths.index
    erm = index_erm_dir(config.index) if config.index is not None else paths.erm
    if retriever is None:
        retriever = open_retriever(index, erm)
    prompt = PromptConfig(manifest.language, tuple(manifest.labels), config.use_video, config.max_length)
    if prompt.max_length is None:
        prompt = PromptConfig(prompt.language, prompt.labels, prompt.use_video, context_limit(llm))
    data_hash = data_sha256 or samples_sha256(train)
    identity = {
        "stage": "eerg",
        "llm": llm_fp["config_sha256"],
        "precision": str(accelerator.mixed_precision),
        "visual_encoder": cache.fingerprint if cache is not None else None,
        "frames": config.frames,
        "prompt": asdict(prompt),
        "rep_projector": sha256_file(paths.projector / PROJECTOR_WEIGHTS) if paths.projector and projector else None,
        "prefix": asdict(prefix.config),
        "prefix_init": config.prefix_init,
        "lr": [config.lr, config.lr_prefix, config.lr_projector],
        "index": sha256_file(index / INDEX_MANIFEST) if index is not None else None,
        "data": data_hash,
    }
    data = prepare_data(
        accelerator, train, valid, tokenizer, prompt, retriever, cache, with_response=True,
        progress=config.train.progress,
    )  # fmt: skip
    groups = [ParamGroup("prefix", list(prefix.parameters()), config.lr_prefix or config.lr)]
    if projector is not None:
        groups.append(ParamGroup("projector", list(projector.parameters()), config.lr_projector or config.lr))
    model = StageModel(llm, projector)
    stage = Stage("eerg", model, groups, data.train, data.valid, data.candidates, data.video_features, identity)

    finished = finished_run(out_dir, "eerg", run_identity(identity, config.train)) if resume else None
    if finished is not None:  # killed after it had finished: the bundle holds the result
        prefix.load_state_dict(PrefixEncoder.load(out_dir / PREFIX_DIR, model=llm).state_dict())
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
                index=index,
                erm=erm,
                visual_encoder=encoder_name,
                visual_encoder_fingerprint=cache.fingerprint if cache is not None else None,
                projector=projector,
                prefix=prefix,
                training_data_sha256=data_hash,
                description=(
                    f"EERG (Eq. 11): prefix (pre_seq_len {prefix.config.pre_seq_len})"
                    f"{' and projector' if projector is not None else ''} trained on {len(train)} samples "
                    f"for {config.train.epochs} epochs from REP bundle {manifest.name}"
                ),
            ),
        )
        finish_stage(out_dir, "eerg", run_identity(identity, config.train), result)
    accelerator.wait_for_everyone()
    return result
