"""Emotion-Enhanced Response Generation, EERG (paper 3.5, Eq. 11): p-tuning v2 prefix plus the projector.

Starts from a REP bundle: its projector (Eq. 9) keeps training together with a new p-tuning v2 prefix (trainable
key/values in every layer, ``pre_seq_len`` 128 as in ChatGLM2's recipe, in ChatGLM2's native multi-query layout for
ChatGLM2) or one loaded from ``prefix_init`` (our format or ChatGLM2's official p-tuning checkpoint). Without a REP
bundle (Table 3's "w/o REP") the projector starts freshly initialised, as REP's does, and the configuration names the
parts REP would have fixed. The input is the same six-part prompt as REP; the target is the emotion followed by the
response. Paper defaults: batch 16, lr 2e-2, AdamW; the prefix and the projector may have their own learning rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from elmd_sdk.bundle import MANIFEST_FILE, load_bundle, verify_components
from elmd_sdk.bundle.write import resolve_llm_name
from elmd_sdk.data.labels import EMOTIONS
from elmd_sdk.data.records import Sample
from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.io import sha256_file
from elmd_sdk.models.prefix import (
    DEFAULT_PRE_SEQ_LEN,
    PrefixConfig,
    PrefixEncoder,
    attach_prefix,
    check_takes_prefix,
)
from elmd_sdk.models.prefix_init import PREFIX_STARTS, prefix_from_tokens
from elmd_sdk.retrievers.index import index_erm_dir
from elmd_sdk.trainers.examples import Example, PromptConfig
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
from elmd_sdk.video import VideoProjector, VisualEncoder
from elmd_sdk.video.projector import WEIGHTS_FILE as PROJECTOR_WEIGHTS


@dataclass
class EergConfig:
    """What EERG trains on and how (defaults: paper 4.3 and ChatGLM2's p-tuning recipe)."""

    # The REP bundle: base LLM, encoder, language, labels, index and the projector to continue; None = "w/o REP",
    # a fresh projector, the other parts from the fields below (their defaults as in RepConfig).
    from_bundle: str | None = None
    index: str | None = None  # demonstration index; None = the REP bundle's (without one: required, or no retrieval)
    use_retrieval: bool = True  # False: no demonstrations, the "w/o ERM" ablation
    llm: str | None = None  # None = the REP bundle's base LLM (another one is refused), else the embedded default
    visual_encoder: str | None = None  # None = the REP bundle's (another one is refused), else the offline default
    language: str | None = None  # prompt wording; None = the REP bundle's, else "en" (must match the REP bundle's)
    labels: tuple[str, ...] | None = None  # response emotions; None = the REP bundle's, else the seven
    frames: int = 8  # m frames per clip; use REP's
    feature_cache: str | None = None  # folder of cached X; None = elmd-sdk's cache folder (shared with REP)
    use_video: bool = True  # False: the "w/o V" ablation, only the prefix trains
    max_length: int | None = None  # most positions per example; None = the LLM's context length
    max_prompt_tokens: int | None = None  # most prompt tokens per example (older history turns go first)
    pre_seq_len: int | None = None  # prefix length; None = 128, or that of prefix_init
    prefix_projection: bool = False  # ChatGLM2's optional two-layer MLP over the prefix (off in its recipe)
    prefix_init: str | None = None  # starting prefix: our prefix folder or a ChatGLM2 p-tuning checkpoint
    # without prefix_init: "text" = the LLM's own keys/values of the prompt's opening tokens (Li & Liang 2021), or
    # "random" = ChatGLM2's N(0, 1) embedding (raises the starting loss far above the base model's)
    prefix_start: str = "text"
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
        if self.prefix_start not in PREFIX_STARTS:
            raise InputError(f"must be one of {', '.join(PREFIX_STARTS)}", field="prefix_start")
        if self.prefix_start == "text" and self.prefix_projection and self.prefix_init is None:
            raise InputError("--prefix-projection needs --prefix-start random (or --prefix-init)", field="prefix_start")
        if self.index is not None and not self.use_retrieval:
            raise InputError("a demonstration index and no retrieval exclude each other", field="index")
        if self.from_bundle is None and self.index is None and self.use_retrieval:
            raise InputError(
                "without a REP bundle to start from (--from), give the demonstration index (--index) or train "
                "without retrieval (--no-retrieval)",
                field="from_bundle",
            )


@dataclass
class _Start:
    """What EERG starts from: the frozen parts, and the projector (REP's, fresh, or none)."""

    frozen: FrozenParts
    projector: VideoProjector | None
    rep_projector: str | None  # sha256 of the REP projector's weights continued (None: fresh or no projector)
    origin: str  # for the bundle description: "from REP bundle NAME", or how it started without one


def _prompt(config: EergConfig, language: str, labels: tuple[str, ...], llm: Any) -> PromptConfig:
    """The prompt settings in the language and labels EERG trains with, fitted to the LLM's context."""
    prompt = PromptConfig(language, labels, config.use_video, config.max_length, config.max_prompt_tokens)
    prompt.validate()
    return fit_prompt(prompt, llm)


def _from_rep(
    config: EergConfig, source: Path, out_dir: Path, accelerator: Any, visual_encoder: VisualEncoder | None
) -> _Start:
    """Load the REP bundle ``source`` and check the configuration's LLM, encoder, language and labels against it."""
    if out_dir.resolve() == source.resolve():
        raise InputError("the EERG bundle must go to another folder than the REP bundle it starts from", file=out_dir)
    manifest, paths = load_bundle(source)
    if config.language is not None and config.language != manifest.language:
        raise InputError(f"the REP bundle's is {manifest.language!r}", file=source / MANIFEST_FILE, field="language")
    if config.labels is not None and list(config.labels) != manifest.labels:
        raise InputError(f"the REP bundle's are {manifest.labels}", file=source / MANIFEST_FILE, field="labels")
    if manifest.frames is not None and config.frames != manifest.frames:
        problem = f"the REP projector was trained with {manifest.frames} frames per clip, not {config.frames}"
        raise InputError(problem, file=source / MANIFEST_FILE, field="frames")
    llm_name = resolve_llm_name(config.llm) if config.llm is not None else paths.base_llm
    llm, tokenizer, llm_fp = load_frozen_llm(llm_name, accelerator, config.trust_remote_code)
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
        cache = open_feature_cache(visual_encoder, encoder_name, config.frames, config.feature_cache)
        verify_components(manifest, visual_encoder_fingerprint=cache.fingerprint, source=source / MANIFEST_FILE)
        projector = VideoProjector.load(paths.projector, encoder=cache.fingerprint)
        if projector.config.llm.get("config_sha256") != llm_fp["config_sha256"]:  # the LLM is checked by its config
            raise MismatchError(f"{paths.projector}: field 'llm.config_sha256': projector trained for another LLM")
    index = Path(config.index) if config.index is not None else paths.index
    erm = index_erm_dir(config.index) if config.index is not None else paths.erm
    frozen = FrozenParts(
        llm_name=llm_name,
        llm=llm,
        tokenizer=tokenizer,
        llm_fp=llm_fp,
        prompt=_prompt(config, manifest.language, tuple(manifest.labels), llm),
        frames=config.frames,
        cache=cache,
        visual_encoder=encoder_name,
        index=index if config.use_retrieval else None,
        erm=erm if config.use_retrieval else None,
    )
    return _Start(
        frozen=frozen,
        projector=projector,
        rep_projector=sha256_file(paths.projector / PROJECTOR_WEIGHTS) if paths.projector and projector else None,
        origin=f"from REP bundle {manifest.name}",
    )


def _without_rep(config: EergConfig, accelerator: Any, visual_encoder: VisualEncoder | None) -> _Start:
    """The parts the configuration names (defaults as ``train rep``'s), with a projector initialised as REP's is."""
    llm_name = resolve_llm_name(config.llm)
    llm, tokenizer, llm_fp = load_frozen_llm(llm_name, accelerator, config.trust_remote_code)
    cache, projector = None, None
    if config.use_video:
        cache = open_feature_cache(visual_encoder, config.visual_encoder, config.frames, config.feature_cache)
        projector = fresh_projector(cache, llm_fp, config.train.seed)
    index = Path(config.index) if config.index is not None else None
    frozen = FrozenParts(
        llm_name=llm_name,
        llm=llm,
        tokenizer=tokenizer,
        llm_fp=llm_fp,
        prompt=_prompt(config, config.language or "en", config.labels or EMOTIONS, llm),
        frames=config.frames,
        cache=cache,
        visual_encoder=config.visual_encoder,
        index=index,
        erm=index_erm_dir(index) if index is not None else None,
    )
    origin = "without REP, from a freshly initialised projector" if projector else "without REP (no projector)"
    return _Start(frozen=frozen, projector=projector, rep_projector=None, origin=origin)


def _make_prefix(config: EergConfig, llm: Any, first: Example) -> PrefixEncoder:
    """The starting prefix: loaded from ``prefix_init`` (checked against the LLM), else new: from the LLM's keys and
    values of the opening tokens of ``first``'s prompt (chat template and instruction I, the same in every
    example), or random."""
    if config.prefix_init is not None:
        return PrefixEncoder.load(config.prefix_init, model=llm, pre_seq_len=config.pre_seq_len)
    prefix_config = PrefixConfig.for_model(llm, config.pre_seq_len or DEFAULT_PRE_SEQ_LEN, config.prefix_projection)
    if config.prefix_start == "random":
        return PrefixEncoder(prefix_config)
    return prefix_from_tokens(llm, [t for piece in first.pieces for t in piece], prefix_config)


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
    """Train prefix and projector (Eq. 11) from the REP bundle ``config.from_bundle``, or without REP from a fresh
    projector (``from_bundle`` None); write the bundle ``out_dir``.

    Raises :class:`~elmd_sdk.errors.MismatchError` when the LLM or visual encoder differ from the REP bundle's.
    """
    config.validate()
    out_dir = Path(out_dir)
    accelerator = make_accelerator(config.train)
    if config.from_bundle is not None:
        start = _from_rep(config, Path(config.from_bundle), out_dir, accelerator, visual_encoder)
    else:
        start = _without_rep(config, accelerator, visual_encoder)
    frozen, projector = start.frozen, start.projector
    check_takes_prefix(frozen.llm)  # a model that cannot take a prefix is refused before any work
    from accelerate.utils import set_seed

    set_seed(config.train.seed)
    if not config.use_retrieval:
        retriever = None  # not even one handed in
    elif retriever is None:
        retriever = open_retriever(frozen.index, frozen.erm)
    data = prepare_data(
        accelerator, frozen, train, valid, retriever, with_response=True, progress=config.train.progress
    )
    if not data.train:
        raise InputError("no training samples", field="data")
    prefix = _make_prefix(config, frozen.llm, data.train[0])
    attach_prefix(frozen.llm, prefix)
    groups = [ParamGroup("prefix", list(prefix.parameters()), config.lr_prefix or config.lr)]
    if projector is not None:
        groups.append(ParamGroup("projector", list(projector.parameters()), config.lr_projector or config.lr))
    trains_projector = projector is not None and any(e.video for e in data.train)
    description = (
        f"EERG (Eq. 11): prefix (pre_seq_len {prefix.config.pre_seq_len}){' and projector' if trains_projector else ''}"
        f" trained on {len(train)} samples for {config.train.epochs} epochs {start.origin}"
    )
    return train_to_bundle(
        accelerator, "eerg", frozen, data, Trained(projector, prefix, groups), config.train, out_dir, resume,
        data_hash=data_sha256 or samples_sha256(train),
        description=description,
        from_rep=config.from_bundle is not None,
        rep_projector=start.rep_projector,
        prefix=asdict(prefix.config),
        prefix_init=config.prefix_init,
        prefix_start=config.prefix_start if config.prefix_init is None else None,
        lr=[config.lr, config.lr_prefix, config.lr_projector],
    )  # fmt: skip
