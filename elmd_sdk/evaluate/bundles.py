"""The bundle under evaluation: which folder, what identifies it in a report, and its chain or retriever."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import Runnable

from elmd_sdk.bundle import MANIFEST_FILE, load_bundle
from elmd_sdk.chains.calibrate import fit_prior
from elmd_sdk.errors import InputError
from elmd_sdk.evaluate.settings import EvalSettings
from elmd_sdk.io import sha256_file

if TYPE_CHECKING:
    from elmd_sdk.chains.chain import ELMDChain


def resolve_bundle(bundle: str | Path | None) -> Path:
    """The bundle folder: ``None`` or ``"default"`` is the embedded default bundle."""
    if bundle is None or str(bundle) == "default":
        from elmd_sdk.chains.chain import default_bundle_path

        path = default_bundle_path()
        if not (path / MANIFEST_FILE).is_file():
            raise InputError(
                "the embedded default bundle is not built (python -m elmd_sdk.trainers.default_bundle "
                "--out chains/default_bundle); pass --bundle DIR",
                file=path,
            )
        return path
    return Path(bundle)


def bundle_identity(bundle_dir: str | Path) -> dict[str, Any]:
    """What identifies a bundle in a report: its folder, the manifest's hash and its recorded components."""
    manifest, _ = load_bundle(bundle_dir)
    return {
        "path": str(bundle_dir),
        "manifest_sha256": sha256_file(Path(bundle_dir) / MANIFEST_FILE),
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
    bundle_dir: str | Path,
    settings: EvalSettings,
    *,
    use_retrieval: bool = True,
    use_video: bool = True,
    use_trained: bool = True,
) -> ELMDChain:
    """``ELMDChain.from_bundle`` with the settings' decoding overrides and device."""
    from elmd_sdk.chains.chain import ELMDChain
    from elmd_sdk.sharding import process_device

    chain = ELMDChain.from_bundle(
        bundle_dir,
        use_retrieval=use_retrieval,
        use_video=use_video,
        device=process_device(settings.device),  # under accelerate launch: "cuda" is this process's GPU
        dtype=settings.dtype,
        quantize=settings.quantize,
        emotion_mode=settings.emotion_mode,
        demonstration_form=settings.demonstration_form,
        use_trained=use_trained,
        **settings.generation,
    )
    return chain if settings.emotion_calibration else chain.model_copy(update={"emotion_calibration": False})


def calibrate(chain: ELMDChain, settings: EvalSettings) -> ELMDChain:
    """``chain`` with its emotion prior fitted on the samples of ``settings.calibrate_on`` (batch calibration),
    prompted as this chain prompts (so each ablation row gets its own); unchanged without that file."""
    if settings.calibrate_on is None or not settings.emotion_calibration or chain.emotion_mode != "closed":
        return chain
    return chain.model_copy(update={"emotion_log_prior": fit_prior(chain, settings.calibrate_on)})


def load_retriever(index_dir: str | Path) -> Runnable[str, Any]:
    """An EmotionalRetriever (k = 1) over an index folder, with the ERM its manifest records."""
    from elmd_sdk.retrievers import EmotionalRetriever

    return EmotionalRetriever.load(index_dir, k=1)
