"""Evaluation of an ELMD chain (paper 4.4, 5.1, 5.3): generate for every sample, score, report, and ablate.

:func:`evaluate` runs any chain (a Runnable taking the chain input dict and returning an
:class:`~elmd_sdk.chains.parser.ELMDResult`) over samples and scores BLEU-2/4, METEOR, ROUGE-1/L and the
response-emotion accuracy and macro-F1 with :func:`~elmd_sdk.metrics.score_generations`. Every generation is
kept next to its reference, so a report can be read like the paper's case study (Figure 5).

:func:`run_ablations` produces the rows of Table 3 from one full bundle plus optional variants: "w/o ERM"
(no retrieval) and "w/o V" (no video) are inference-time switches of the full bundle unless a bundle trained
that way is given; "w/o ERT" and "w/o SSC" need an ERM trained without that part (its index, swapped into the
full bundle, or a whole bundle trained with it); "w/o REP" needs a bundle whose EERG did not start from REP.
A row whose inputs were not given is reported as not provided, never approximated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from langchain_core.runnables import Runnable

from elmd_sdk import __version__
from elmd_sdk.chains.parser import ELMDResult
from elmd_sdk.data.labels import EMOTIONS
from elmd_sdk.data.records import Sample
from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.io import atomic_write_json, sha256_file
from elmd_sdk.metrics import score_generations, tokenize
from elmd_sdk.metrics.emotion import emotion_baselines, emotion_scores
from elmd_sdk.metrics.reply import COPY_COVERAGE, copy_rate, distinct_n, template_leak_rate
from elmd_sdk.progress import make_progress

if TYPE_CHECKING:
    from elmd_sdk.bundle import BundleManifest
    from elmd_sdk.chains.chain import ELMDChain

REPORT_FORMAT = "elmd-eval-report"
REPORT_VERSION = 1
BUNDLE_MANIFEST = "bundle.json"  # elmd_sdk.bundle.MANIFEST_FILE
INDEX_MANIFEST = "index.json"  # elmd_sdk.retrievers.index.MANIFEST_FILE

ABLATIONS: dict[str, str] = {
    "full": "ours",
    "wo_erm": "w/o ERM",
    "wo_ert": "w/o ERT",
    "wo_ssc": "w/o SSC",
    "wo_v": "w/o V",
    "wo_rep": "w/o REP",
}
"""Table 3's rows, in the paper's order: key -> the label the paper prints."""

# What a --variant may be for each row: a whole bundle, or an index (ERM variant) swapped into the full bundle.
VARIANT_KINDS: dict[str, tuple[str, ...]] = {
    "wo_erm": ("bundle",),
    "wo_ert": ("bundle", "index"),
    "wo_ssc": ("bundle", "index"),
    "wo_v": ("bundle",),
    "wo_rep": ("bundle",),
}

ChainRunnable = Runnable[dict[str, Any], ELMDResult]


@dataclass(frozen=True)
class EvalSettings:
    """How generations are made: decoding overrides (None keeps the bundle's default) and the run's shape."""

    max_new_tokens: int | None = None  # reply length limit; None = the bundle's default
    seed: int | None = 0  # seeds each sample's sampling, so a run is reproducible sample by sample
    do_sample: bool | None = None  # True: nucleus sampling (paper 4.3), False: greedy; None = the bundle's default
    batch_size: int = 1  # samples sent to ``chain.batch`` at once (generation itself is serialised per model)
    limit: int | None = None  # evaluate only the first ``limit`` samples of the data (file order)
    meteor_synonyms: bool = True  # METEOR with WordNet synonyms where an offline WordNet is installed
    device: str | None = None  # torch device of the LLM; None = where transformers loads
    emotion_mode: Literal["closed", "free"] = "closed"  # closed-set emotion decoding, or the model writes it (paper)

    def validate(self) -> None:
        """Raise :class:`InputError` naming the first impossible setting."""
        for name in ("max_new_tokens", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"must be at least 1, got {value}", field=name)
        if self.batch_size < 1:
            raise InputError(f"must be at least 1, got {self.batch_size}", field="batch_size")
        if self.emotion_mode not in ("closed", "free"):
            raise InputError(f"must be closed or free, got {self.emotion_mode!r}", field="emotion_mode")

    def generation(self) -> dict[str, Any]:
        """The decoding overrides passed to ``ELMDChain.from_bundle`` (unset ones left out)."""
        values = {"max_new_tokens": self.max_new_tokens, "seed": self.seed, "do_sample": self.do_sample}
        return {key: value for key, value in values.items() if value is not None}


@dataclass(frozen=True)
class Generation:
    """One sample's generation next to its reference (the case-study view of a report)."""

    dialogue_id: str
    speaker: str  # who said the utterance u
    utterance: str
    reference: str  # the gold response r
    reference_emotion: str | None
    response: str  # the generated response
    emotion: str | None  # the predicted response emotion (None: the model gave none the parser could read)
    demonstration: dict[str, Any] | None  # the retrieved demonstration R: response r', utterance u', emotions, score
    emotion_scores: dict[str, float] | None = None  # closed-set probability of each label
    utterance_emotion: str | None = None  # the emotion recognised in u (neighbour vote)
    reference_utterance_emotion: str | None = None  # u's gold emotion


@dataclass
class EvalResult:
    """Scores and generations of one chain over one set of samples."""

    metrics: dict[str, Any]  # score_generations' dict: values (x100) and how each was computed
    generations: list[Generation]
    generation_settings: dict[str, Any]  # the chat model's effective decoding settings, where it exposes them


@dataclass
class AblationRow:
    """One row of Table 3: its result, or why there is none (``status`` "not provided")."""

    key: str
    label: str
    status: Literal["ok", "not provided"]
    source: str  # where the row's chain came from
    note: str = ""  # caveats, e.g. a switch that changes nothing for this bundle or data
    result: EvalResult | None = None


@dataclass(frozen=True)
class Variant:
    """A --variant input: the row it is for and what the path holds."""

    key: str
    kind: Literal["bundle", "index"]
    path: Path


def sample_input(sample: Sample) -> dict[str, Any]:
    """The chain input for one sample: u with its speaker, the history as {speaker, text}, B and the video."""
    video = sample.video
    return {
        "utterance": sample.utterance.text,
        "speaker": sample.utterance.speaker,
        "history": [{"speaker": turn.speaker, "text": turn.text} for turn in sample.history],
        "background": sample.background,
        "video": {"path": video.path, "start": video.start, "end": video.end} if video is not None else None,
    }


def _demonstration(result: ELMDResult) -> dict[str, Any] | None:
    document = result.demonstration
    if document is None:
        return None
    return {"response": document.page_content, **document.metadata}


def generate(
    chain: ChainRunnable,
    samples: Sequence[Sample],
    *,
    batch_size: int = 1,
    on_advance: Callable[[int], None] | None = None,
) -> list[Generation]:
    """Run ``chain`` on every sample (``batch_size`` at a time through ``chain.batch``); results in sample order.

    ``on_advance(n)`` is called after each batch with the number of samples done in it (for progress bars).
    A sample the chain refuses raises :class:`InputError` naming the sample's position and dialogue.
    """
    generations: list[Generation] = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        inputs = [sample_input(sample) for sample in chunk]
        try:
            if len(inputs) == 1:
                results = [chain.invoke(inputs[0])]
            else:
                results = chain.batch(inputs, config={"max_concurrency": batch_size})
        except InputError as error:
            where = f"samples {start + 1}-{start + len(chunk)}" if len(chunk) > 1 else f"sample {start + 1}"
            raise InputError(f"{where} (dialogue {chunk[0].dialogue_id}): {error}") from error
        for sample, result in zip(chunk, results, strict=True):
            if not isinstance(result, ELMDResult):
                raise TypeError(f"the chain returned {type(result).__name__}, expected ELMDResult")
            generations.append(
                Generation(
                    dialogue_id=sample.dialogue_id,
                    speaker=sample.utterance.speaker,
                    utterance=sample.utterance.text,
                    reference=sample.response.text,
                    reference_emotion=sample.response.emotion,
                    response=result.response.strip(),
                    emotion=result.emotion,
                    demonstration=_demonstration(result),
                    emotion_scores=result.emotion_scores,
                    utterance_emotion=result.utterance_emotion,
                    reference_utterance_emotion=sample.utterance.emotion,
                )
            )
        if on_advance is not None:
            on_advance(len(chunk))
    return generations


def score(
    generations: Sequence[Generation],
    language: str,
    labels: Sequence[str] = EMOTIONS,
    *,
    meteor_synonyms: bool = True,
) -> dict[str, Any]:
    """The paper's metrics (x100) of the generations against their references, with their metadata, plus what a
    chatbot builder checks (:mod:`elmd_sdk.metrics.reply`): distinct-1/2, copy rate, template-leak rate.

    Emotion scores compare the predicted response emotion with the reference's, next to two baselines on the same
    samples (majority class, the demonstration's e'); they are None when some reference has no emotion label.
    The utterance emotion is scored (accuracy, weighted F1) where the chain recognised one for every sample.
    """
    hyps = [g.response for g in generations]
    refs = [g.reference for g in generations]
    gold = [g.reference_emotion for g in generations]
    labelled = all(e is not None for e in gold)
    metrics = score_generations(
        hyps,
        refs,
        language,
        [g.emotion for g in generations] if labelled else None,
        [e for e in gold if e is not None] if labelled else None,
        labels,
        meteor_synonyms=meteor_synonyms,
    )
    tokens = [tokenize(h, language) for h in hyps]
    demonstrations = [tokenize(g.demonstration["response"], language) if g.demonstration else None for g in generations]
    metrics.update(
        distinct_1=distinct_n(tokens, 1),
        distinct_2=distinct_n(tokens, 2),
        copy_rate=copy_rate(tokens, demonstrations),
        copy_coverage=COPY_COVERAGE,
        template_leak_rate=template_leak_rate(hyps),
        emotion_baselines=None,
        utterance_emotion=None,
    )
    if labelled:
        demo_emotions = [(g.demonstration or {}).get("response_emotion") for g in generations]
        metrics["emotion_baselines"] = emotion_baselines([e for e in gold if e is not None], demo_emotions, labels)
    utterance_gold = [g.reference_utterance_emotion for g in generations]
    if all(g.utterance_emotion is not None for g in generations) and all(e in labels for e in utterance_gold):
        recognised = emotion_scores([g.utterance_emotion for g in generations], utterance_gold, labels)  # type: ignore[arg-type]
        metrics["utterance_emotion"] = {key: recognised[key] for key in ("emotion_accuracy", "emotion_weighted_f1")}
    return metrics


def generation_settings(chain: Any) -> dict[str, Any]:
    """The effective decoding settings of the chain's chat model (empty for a chain without one)."""
    chat = getattr(chain, "chat_model", None)
    names = ("do_sample", "temperature", "top_p", "top_k", "max_new_tokens", "seed")
    return {name: getattr(chat, name) for name in names if chat is not None and hasattr(chat, name)}


def evaluate(
    chain: ChainRunnable,
    samples: Sequence[Sample],
    *,
    language: str | None = None,
    labels: Sequence[str] | None = None,
    batch_size: int = 1,
    meteor_synonyms: bool = True,
    description: str = "eval",
    show_progress: bool | None = None,
) -> EvalResult:
    """Generate with ``chain`` for every sample and score the generations (paper 4.4).

    ``language`` and ``labels`` default to the chain's own (``ELMDChain.language``/``labels``), else English
    and the seven emotions. ``show_progress=None`` shows the rich bar only on a terminal.
    """
    if not samples:
        raise InputError("no samples to evaluate")
    language = language or str(getattr(chain, "language", "en"))
    labels = labels or tuple(getattr(chain, "labels", EMOTIONS))
    with make_progress(disable=None if show_progress is None else not show_progress) as progress:
        task = progress.add_task(description, total=len(samples), info="")
        generations = generate(chain, samples, batch_size=batch_size, on_advance=lambda n: progress.advance(task, n))
    metrics = score(generations, language, labels, meteor_synonyms=meteor_synonyms)
    return EvalResult(metrics=metrics, generations=generations, generation_settings=generation_settings(chain))


# -- bundles -----------------------------------------------------------------------------------------------------


def resolve_bundle(bundle: str | Path | None) -> Path:
    """The bundle folder: ``None`` or ``"default"`` is the embedded default bundle."""
    if bundle is None or str(bundle) == "default":
        from elmd_sdk.chains.chain import default_bundle_path

        path = default_bundle_path()
        if not (path / BUNDLE_MANIFEST).is_file():
            raise InputError(
                "the embedded default bundle is not built (python -m elmd_sdk.trainers.default_bundle "
                "--out chains/default_bundle); pass --bundle DIR",
                file=path,
            )
        return path
    return Path(bundle)


def bundle_identity(bundle_dir: str | Path) -> dict[str, Any]:
    """What identifies a bundle in a report: its folder, the manifest's hash and its recorded components."""
    from elmd_sdk.bundle import load_bundle

    manifest, _ = load_bundle(bundle_dir)
    return {
        "path": str(bundle_dir),
        "manifest_sha256": sha256_file(Path(bundle_dir) / BUNDLE_MANIFEST),
        "name": manifest.name,
        "language": manifest.language,
        "labels": list(manifest.labels),
        "base_llm": manifest.base_llm,
        "base_llm_config_sha256": manifest.base_llm_config_sha256,
        "training_data_sha256": manifest.training_data_sha256,
        "parts": {
            "erm": manifest.erm_dir is not None,
            "index": manifest.index_dir is not None,
            "projector": manifest.projector_dir is not None,
            "prefix": manifest.prefix_dir is not None,
        },
        "elmd_sdk_version": manifest.elmd_sdk_version,
    }


def load_chain(
    bundle_dir: str | Path, settings: EvalSettings, *, use_retrieval: bool = True, use_video: bool = True
) -> ELMDChain:
    """``ELMDChain.from_bundle`` with the settings' decoding overrides and device."""
    from elmd_sdk.chains.chain import ELMDChain

    return ELMDChain.from_bundle(
        bundle_dir,
        use_retrieval=use_retrieval,
        use_video=use_video,
        device=settings.device,
        emotion_mode=settings.emotion_mode,
        **settings.generation(),
    )


def load_retriever(index_dir: str | Path) -> Runnable[str, Any]:
    """An EmotionalRetriever (k = 1) over an index folder, with the ERM its manifest records."""
    from elmd_sdk.retrievers import EmotionalRetriever

    return EmotionalRetriever.load(index_dir, k=1)


# -- reports -----------------------------------------------------------------------------------------------------


def _data_identity(data: str | Path, total: int, used: int, limit: int | None) -> dict[str, Any]:
    return {
        "path": str(data),
        "sha256": sha256_file(data),
        "samples_total": total,
        "samples_used": used,
        "limit": limit,
    }


def _result_json(result: EvalResult) -> dict[str, Any]:
    return {
        "metrics": result.metrics,
        "generation_settings": result.generation_settings,
        "generations": [asdict(g) for g in result.generations],
    }


def _report_head(
    kind: str, bundle: Mapping[str, Any] | None, data: dict[str, Any], settings: EvalSettings
) -> dict[str, Any]:
    """The fields every report starts with: format and version, kind, SDK version, bundle, data and settings."""
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "kind": kind,
        "elmd_sdk_version": __version__,
        "bundle": dict(bundle) if bundle is not None else None,
        "data": data,
        "settings": asdict(settings),
    }


def eval_report(
    result: EvalResult,
    *,
    settings: EvalSettings,
    data: str | Path,
    samples_total: int,
    bundle: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The JSON report of one evaluation: metrics with metadata, settings, bundle identity, every generation."""
    data_identity = _data_identity(data, samples_total, len(result.generations), settings.limit)
    return {**_report_head("eval", bundle, data_identity, settings), **_result_json(result)}


def ablation_report(
    rows: Sequence[AblationRow],
    *,
    settings: EvalSettings,
    data: str | Path,
    samples_total: int,
    samples_used: int,
    bundle: Mapping[str, Any],
    variants: Sequence[Variant],
) -> dict[str, Any]:
    """The JSON report of a Table 3 run: one entry per row (metrics and generations, or "not provided")."""
    data_identity = _data_identity(data, samples_total, samples_used, settings.limit)
    return {
        **_report_head("ablations", bundle, data_identity, settings),
        "variants": {v.key: {"kind": v.kind, "path": str(v.path)} for v in variants},
        "rows": [
            {
                "row": row.key,
                "label": row.label,
                "status": row.status,
                "source": row.source,
                "note": row.note,
                **(_result_json(row.result) if row.result is not None else {"metrics": None, "generations": None}),
            }
            for row in rows
        ],
    }


def write_report(path: str | Path, report: Mapping[str, Any]) -> list[Path]:
    """Write a report as JSON atomically (temporary file, then rename), and beside it a confusion-matrix PNG of each
    scored result (``REPORT.confusion.png``, or ``REPORT.ROW.confusion.png`` per Table 3 row); returns the paths."""
    from elmd_sdk.metrics.confusion_plot import write_confusion_png

    path = Path(path)
    atomic_write_json(path, report)
    written = [path]
    results = [("", report)] if "metrics" in report else [(f".{row['row']}", row) for row in report.get("rows", [])]
    for suffix, result in results:
        confusion = (result.get("metrics") or {}).get("emotion_confusion")
        if confusion is not None:
            title = f"response emotion{' ' + result['label'] if suffix else ''} (gold rows, predicted columns)"
            written.append(write_confusion_png(confusion, path.with_name(f"{path.stem}{suffix}.confusion.png"), title))
    return written


# -- ablations (Table 3) -----------------------------------------------------------------------------------------


def parse_variant(text: str) -> tuple[str, Path]:
    """Split a ``ROW=DIR`` option value (ROW one of Table 3's rows other than full)."""
    key, sep, path = text.partition("=")
    key = key.strip().replace("-", "_").lower()
    if not sep or not path.strip():
        raise InputError(f"expected ROW=DIR, got {text!r}", field="--variant")
    if key not in VARIANT_KINDS:
        raise InputError(f"unknown row {key!r} (rows taking a variant: {', '.join(VARIANT_KINDS)})", field="--variant")
    return key, Path(path.strip())


def classify_variant(key: str, path: str | Path) -> Variant:
    """What a variant folder holds (a bundle has bundle.json, an index index.json), checked against its row."""
    path = Path(path)
    if (path / BUNDLE_MANIFEST).is_file():
        kind: Literal["bundle", "index"] = "bundle"
    elif (path / INDEX_MANIFEST).is_file():
        kind = "index"
    else:
        raise InputError(f"holds neither {BUNDLE_MANIFEST} (a bundle) nor {INDEX_MANIFEST} (an index)", file=path)
    if kind not in VARIANT_KINDS[key]:
        allowed = " or ".join(f"an {k}" if k == "index" else f"a {k}" for k in VARIANT_KINDS[key])
        raise InputError(f"row {key} takes {allowed}, this folder is an {kind}", file=path, field="--variant")
    return Variant(key=key, kind=kind, path=path)


def _check_comparable(full: BundleManifest, variant: Variant) -> None:
    """A variant bundle must share the full bundle's base LLM and language, or its row compares nothing."""
    from elmd_sdk.bundle import load_bundle

    manifest, _ = load_bundle(variant.path)
    source = variant.path / BUNDLE_MANIFEST
    if manifest.base_llm_config_sha256 != full.base_llm_config_sha256:
        raise MismatchError(
            f"{source}: field 'base_llm_config_sha256' disagrees with the full bundle's: "
            f"the {variant.key} variant was made for another base LLM"
        )
    if manifest.language != full.language:
        raise MismatchError(f"{source}: field 'language' is {manifest.language!r}, the full bundle's {full.language!r}")


def run_ablations(
    bundle: str | Path,
    samples: Sequence[Sample],
    variants: Sequence[Variant] = (),
    settings: EvalSettings | None = None,
    *,
    rows: Sequence[str] | None = None,
    show_progress: bool | None = None,
) -> list[AblationRow]:
    """Evaluate Table 3's rows (all, or ``rows``) on ``samples`` from the full ``bundle`` and the given variants.

    The full bundle's LLM is loaded once (when a row first needs it); its inference-time switches and index swaps
    share it. Variant bundles are loaded one at a time, after checking they share the full bundle's base LLM and
    language.
    """
    from elmd_sdk.bundle import load_bundle

    settings = settings or EvalSettings()
    wanted = list(rows) if rows is not None else list(ABLATIONS)
    for key in wanted:
        if key not in ABLATIONS:
            raise InputError(f"unknown row {key!r} (rows: {', '.join(ABLATIONS)})", field="rows")
    by_key: dict[str, Variant] = {}
    for given in variants:
        if given.key in by_key:
            raise InputError(f"row {given.key} was given two variants", field="--variant")
        by_key[given.key] = given
    manifest, _ = load_bundle(bundle)
    for given in by_key.values():
        if given.kind == "bundle":
            _check_comparable(manifest, given)
    loaded: list[ELMDChain] = []

    def full() -> ELMDChain:
        if not loaded:
            loaded.append(load_chain(bundle, settings))
        return loaded[0]

    has_video = any(sample.video is not None for sample in samples)
    out: list[AblationRow] = []
    for key in wanted:
        label = ABLATIONS[key]
        variant = by_key.get(key)
        chain, source, note = _row_chain(key, full, variant, settings, has_video)
        if chain is None:
            out.append(AblationRow(key, label, "not provided", source, note))
            continue
        result = evaluate(
            chain,
            samples,
            batch_size=settings.batch_size,
            meteor_synonyms=settings.meteor_synonyms,
            description=label,
            show_progress=show_progress,
        )
        out.append(AblationRow(key, label, "ok", source, note, result))
    return out


def _row_chain(
    key: str, full: Callable[[], ELMDChain], variant: Variant | None, settings: EvalSettings, has_video: bool
) -> tuple[ELMDChain | None, str, str]:
    """The chain of one row, where it comes from, and a caveat (None chain: the row's inputs were not given).

    ``full()`` loads the full bundle's chain on first use (a run of variant bundles only never loads it).
    """
    if variant is not None and variant.kind == "bundle":  # its description says how it was trained (e.g. w/o REP)
        chain = load_chain(variant.path, settings)
        return chain, f"bundle {variant.path}", chain.manifest.description if chain.manifest is not None else ""
    if key == "full":
        return full(), "full bundle", ""
    if key == "wo_erm":
        chain = full()
        note = "" if chain.retriever is not None else "the full bundle has no index: no retrieval in either row"
        return chain.model_copy(update={"use_retrieval": False}), "full bundle, retrieval off", note
    if key == "wo_v":
        chain = full()
        if not chain.video_enabled:
            note = "the full bundle has no video projector: no video reaches the model in either row"
        elif not has_video:
            note = "the samples have no videos: no video reaches the model in either row"
        else:
            note = ""
        return chain.model_copy(update={"use_video": False}), "full bundle, video off", note
    if variant is not None:  # an ERM variant's index in place of the full bundle's
        retriever = load_retriever(variant.path)
        source = f"full bundle with index {variant.path}"
        note = "only retrieval at inference uses the variant ERM; the LLM parts were trained with the full ERM"
        return full().model_copy(update={"retriever": retriever, "use_retrieval": True}), source, note
    needs = {
        "wo_ert": "an ERM trained with --no-ert: --variant wo_ert=INDEX_DIR or BUNDLE_DIR",
        "wo_ssc": "an ERM trained with --no-ssc: --variant wo_ssc=INDEX_DIR or BUNDLE_DIR",
        "wo_rep": "a bundle whose EERG did not start from REP (train eerg without --from): --variant wo_rep=BUNDLE_DIR",
    }
    return None, "", f"needs {needs[key]}"


__all__ = [
    "ABLATIONS",
    "AblationRow",
    "EvalResult",
    "EvalSettings",
    "Generation",
    "Variant",
    "ablation_report",
    "bundle_identity",
    "classify_variant",
    "eval_report",
    "evaluate",
    "generate",
    "generation_settings",
    "load_chain",
    "load_retriever",
    "parse_variant",
    "resolve_bundle",
    "run_ablations",
    "sample_input",
    "score",
    "write_report",
]
