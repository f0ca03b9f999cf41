"""The rows of the paper's Table 3 from one full bundle plus optional variants (paper 5.3).

"w/o ERM" (no retrieval) and "w/o V" (no video) are inference-time switches of the full bundle unless a bundle
trained that way is given; "w/o ERT" and "w/o SSC" need an ERM trained without that part (its index, swapped into
the full bundle, or a whole bundle trained with it); "w/o REP" needs a bundle whose EERG did not start from REP.
A row whose inputs were not given is reported as not provided, never approximated.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from elmd_sdk.bundle import MANIFEST_FILE, BundleManifest, load_bundle
from elmd_sdk.data.records import Sample
from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.evaluate.bundles import calibrate, load_chain, load_retriever
from elmd_sdk.evaluate.run import EvalResult, evaluate
from elmd_sdk.evaluate.settings import EvalSettings

if TYPE_CHECKING:
    from elmd_sdk.chains.chain import ELMDChain

INDEX_MANIFEST = "index.json"  # retrievers.index_manifest.MANIFEST_FILE; importing it would load torch and faiss

ABLATIONS: dict[str, str] = {
    "full": "ours",
    "wo_erm": "w/o ERM",
    "wo_ert": "w/o ERT",
    "wo_ssc": "w/o SSC",
    "wo_v": "w/o V",
    "wo_rep": "w/o REP",
}
"""Table 3's rows, in the paper's order: key -> the label the paper prints."""

BASELINES: dict[str, str] = {"base": "untuned", "base_wo_erm": "untuned w/o ERM"}
"""Rows asked for by name only (``rows``): the bundle's base LLM without its trained prefix and projector, with the
same prompt, decoding and (``base``) retrieval, the comparison that shows whether training helped."""
ROWS = {**ABLATIONS, **BASELINES}

# What a --variant may be for each row: a whole bundle, or an index (ERM variant) swapped into the full bundle.
VARIANT_KINDS: dict[str, tuple[str, ...]] = {
    "wo_erm": ("bundle",),
    "wo_ert": ("bundle", "index"),
    "wo_ssc": ("bundle", "index"),
    "wo_v": ("bundle",),
    "wo_rep": ("bundle",),
}


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
    if (path / MANIFEST_FILE).is_file():
        kind: Literal["bundle", "index"] = "bundle"
    elif (path / INDEX_MANIFEST).is_file():
        kind = "index"
    else:
        raise InputError(f"holds neither {MANIFEST_FILE} (a bundle) nor {INDEX_MANIFEST} (an index)", file=path)
    if kind not in VARIANT_KINDS[key]:
        allowed = " or ".join(f"an {k}" if k == "index" else f"a {k}" for k in VARIANT_KINDS[key])
        raise InputError(f"row {key} takes {allowed}, this folder is an {kind}", file=path, field="--variant")
    return Variant(key=key, kind=kind, path=path)


def _check_comparable(full: BundleManifest, variant: Variant) -> None:
    """A variant bundle must share the full bundle's base LLM and language, or its row compares nothing."""
    manifest, _ = load_bundle(variant.path)
    source = variant.path / MANIFEST_FILE
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
    settings = settings or EvalSettings()
    wanted = list(rows) if rows is not None else list(ABLATIONS)
    for key in wanted:
        if key not in ROWS:
            raise InputError(f"unknown row {key!r} (rows: {', '.join(ROWS)})", field="rows")
    by_key: dict[str, Variant] = {}
    for given in variants:
        if given.key in by_key:
            raise InputError(f"row {given.key} was given two variants", field="--variant")
        by_key[given.key] = given
    manifest, _ = load_bundle(bundle)
    for given in by_key.values():
        if given.kind == "bundle":
            _check_comparable(manifest, given)
    loaded: dict[bool, ELMDChain] = {}  # use_trained -> chain, each loaded on first use

    def full(use_trained: bool = True) -> ELMDChain:
        if use_trained not in loaded:
            loaded[use_trained] = load_chain(bundle, settings, use_trained=use_trained)
        return loaded[use_trained]

    has_video = any(sample.video is not None for sample in samples)
    out: list[AblationRow] = []
    for key in wanted:
        label = ROWS[key]
        variant = by_key.get(key)
        chain, source, note = _row_chain(key, full, variant, settings, has_video)
        if chain is None:
            out.append(AblationRow(key, label, "not provided", source, note))
            continue
        result = evaluate(
            calibrate(chain, settings),
            samples,
            batch_size=settings.batch_size,
            meteor_synonyms=settings.meteor_synonyms,
            text_metrics=settings.text_metrics,
            description=label,
            show_progress=show_progress,
        )
        out.append(AblationRow(key, label, "ok", source, note, result))
    return out


def _row_chain(
    key: str, full: Callable[..., ELMDChain], variant: Variant | None, settings: EvalSettings, has_video: bool
) -> tuple[ELMDChain | None, str, str]:
    """The chain of one row, where it comes from, and a caveat (None chain: the row's inputs were not given).

    ``full()`` loads the full bundle's chain on first use (a run of variant bundles only never loads it).
    """
    if variant is not None and variant.kind == "bundle":  # its description says how it was trained (e.g. w/o REP)
        chain = load_chain(variant.path, settings)
        return chain, f"bundle {variant.path}", chain.manifest.description if chain.manifest is not None else ""
    if key == "full":
        return full(), "full bundle", ""
    if key in BASELINES:
        untuned = full(use_trained=False)
        if key == "base":
            return untuned, "full bundle's base LLM, untuned", ""
        return untuned.model_copy(update={"use_retrieval": False}), "full bundle's base LLM, untuned, retrieval off", ""
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
