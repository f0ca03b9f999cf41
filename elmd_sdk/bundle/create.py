"""An untuned bundle around any causal LM: what ``elmd-sdk bundle create`` writes.

Like the embedded default bundle, it has no trained prefix and no projector: the LLM as it is, the prompt's
language and label set, optionally a demonstration index (with the ERM it was built with), the decoding settings
and the precision the LLM loads with. ``chat``, ``serve``, ``eval`` and ``calibrate`` take it like any bundle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from elmd_sdk.bundle.manifest import MANIFEST_FILE, BundleManifest, load_bundle
from elmd_sdk.bundle.write import TrainedParts, resolve_llm_name, write_bundle
from elmd_sdk.data.labels import EMOTIONS
from elmd_sdk.errors import InputError
from elmd_sdk.io import atomic_folder, check_output_folder, read_json
from elmd_sdk.models.generation import check_generation
from elmd_sdk.models.precision import check_precision


def create_bundle(
    out: str | Path,
    llm: str | Path,
    *,
    index: str | Path | None = None,
    language: str = "en",
    labels: Sequence[str] = EMOTIONS,
    dtype: str = "auto",
    quantize: str = "none",
    generation: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> BundleManifest:
    """Write an untuned bundle for ``llm`` (a model folder, a ``.gguf`` file or a name, as ``load_llm`` takes) into
    the folder ``out`` (replaced as a whole at the end; a folder of other files only with ``overwrite``) and return
    its manifest.

    ``index``: an index folder from ``elmd-sdk index build`` (copied in, with the ERM it was built with); ``None``
    answers without demonstrations. ``generation``: decoding settings the bundle sets
    (:class:`~elmd_sdk.models.generation.GenerationConfig` names). ``dtype`` / ``quantize``: the precision chat,
    serve and eval load the LLM with (:mod:`elmd_sdk.models.precision`). Every setting is checked before the LLM
    loads; the LLM is loaded once, at that precision, to record its config hash. A local LLM is recorded by its
    absolute path, so the bundle works where that path does.
    """
    from elmd_sdk.models.llm import llm_fingerprint, load_llm
    from elmd_sdk.retrievers.index import index_erm_dir

    out = Path(out)
    check_output_folder(out, MANIFEST_FILE, overwrite=overwrite)
    name, settings = out.resolve().name, check_generation(generation or {})
    precision = check_precision(dtype, quantize)
    unknown = "unknown until the LLM loads"
    BundleManifest(name, unknown, list(labels), language=language, generation=settings).validate()
    erm = index_erm_dir(index) if index is not None else None  # also: an index folder with its manifest
    base_llm = resolve_llm_name(str(llm))
    model, _ = load_llm(base_llm, dtype=precision.dtype, quantize=precision.quantize)
    parts = TrainedParts(
        base_llm=base_llm,
        base_llm_config_sha256=llm_fingerprint(model)["config_sha256"],
        language=language,
        labels=tuple(labels),
        index=Path(index) if index is not None else None,
        erm=erm,
        visual_encoder=None,
        visual_encoder_fingerprint=None,
        projector=None,
        frames=0,  # recorded only with a projector
        prefix=None,
        training_data_sha256=None,
        description=f"untuned {llm}{f' with the index {index}' if index is not None else ''} (elmd-sdk bundle create)",
        generation=settings,
        precision=precision,
    )
    del model
    with atomic_folder(out) as folder:
        write_bundle(folder, parts, name)
    return load_bundle(out)[0]


def read_label_file(path: str | Path) -> tuple[str, ...]:
    """The response emotions listed in a JSON file (``["happy", "sad", ...]``; the bundle checks them further)."""
    labels = read_json(path)
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise InputError('expected a JSON list of emotion labels, such as ["happy", "sad", "neutral"]', file=path)
    return tuple(labels)
