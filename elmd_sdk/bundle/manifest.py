"""The bundle manifest: what ``bundle.json`` holds, its checks, and the names of a bundle's files and folders.

The manifest records what the weights were made for (the base LLM's config hash, the visual encoder's
fingerprint, pre_seq_len); :func:`verify_components` refuses a bundle whose recorded identity disagrees
with what is loaded, naming the field. Only JSON and safetensors are read: never pickle.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from os import PathLike
from pathlib import Path, PurePosixPath
from typing import Any

from elmd_sdk import __version__
from elmd_sdk.data.labels import check_log_prior
from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.io import atomic_write_json, is_json_int, path_inside, read_json, sha256_file
from elmd_sdk.models.generation import check_generation
from elmd_sdk.models.precision import check_precision

MANIFEST_FILE = "bundle.json"
ERM_DIR = "erm"
INDEX_DIR = "index"
PROJECTOR_DIR = "projector"
PREFIX_DIR = "prefix"
BUNDLE_FORMAT = "elmd-bundle"
FORMAT_VERSION = 1
LANGUAGES = ("en", "zh")


@dataclass
class BundleManifest:
    """What ``bundle.json`` holds: the components of a trained ELMD chain and what they were made for.

    Paths (``erm_dir``, ``index_dir``, ``projector_dir``, ``prefix_dir``) are relative to the bundle folder;
    ``None`` means the part is absent (no retrieval, no trained projector, no prefix).
    """

    name: str
    base_llm_config_sha256: str  # llm_fingerprint(model)["config_sha256"] of the base LLM the weights fit
    labels: list[str]  # the response-emotion label set the prompt offers and the parser accepts
    language: str = "en"  # prompt wording: "en" or "zh" (ChatGLM2, as in the paper)
    base_llm: str | None = None  # LLM name or path (a relative path is inside the bundle); None = embedded SmolLM2
    erm_dir: str | None = None
    index_dir: str | None = None
    visual_encoder: str | None = None  # load_visual_encoder name or path; None = the offline default
    visual_encoder_fingerprint: dict[str, Any] | None = None  # what the projector was trained on
    projector_dir: str | None = None
    frames: int | None = None  # m frames per clip the projector was trained with (paper 3.4); None without one
    prefix_dir: str | None = None
    pre_seq_len: int | None = None  # p-tuning v2 prefix length (section 3.5); None without a prefix
    training_data_sha256: str | None = None  # hash of the data the bundle's weights were trained on
    generation: dict[str, Any] = field(default_factory=dict)  # GenerationConfig overrides (temperature, top_p, ...)
    dtype: str = "auto"  # weight dtype the base LLM loads in (elmd_sdk.models.precision)
    quantize: str = "none"  # weight-only quantization of the base LLM at load: none, int8, int4
    chain: dict[str, Any] = field(default_factory=dict)  # the chain's conversation settings (chains/settings.py),
    # e.g. the demonstration cut-off and the fitted emotion fusion; checked when a chain loads the bundle
    # label -> log-prior of the trained weights on the validation data (batch calibration; closed-set emotion
    # divides by it); None: calibrate on content-free inputs
    emotion_log_prior: dict[str, float] | None = None
    description: str = ""
    elmd_sdk_version: str = __version__
    format: str = BUNDLE_FORMAT
    format_version: int = FORMAT_VERSION

    def label_log_prior(self) -> tuple[float, ...] | None:
        """``emotion_log_prior`` in ``labels`` order (None when the bundle has none)."""
        prior = self.emotion_log_prior
        return None if prior is None else tuple(float(prior[label]) for label in self.labels)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, file: str | Path | None = None) -> BundleManifest:
        """Build from parsed JSON, with an :class:`InputError` naming the first missing, unknown or bad field."""
        if not isinstance(data, dict):
            raise InputError("expected a JSON object", file=file)
        if data.get("format") != BUNDLE_FORMAT:
            raise InputError(f"not an elmd-sdk bundle manifest (expected '{BUNDLE_FORMAT}')", file=file, field="format")
        version = data.get("format_version")
        if not is_json_int(version) or version > FORMAT_VERSION or version < 1:
            problem = f"bundle format {version!r} is not supported (this elmd-sdk reads up to {FORMAT_VERSION})"
            raise InputError(problem, file=file, field="format_version")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise InputError(f"unknown field (known: {', '.join(sorted(known))})", file=file, field=key)
        for key in ("name", "base_llm_config_sha256", "labels"):
            if key not in data:
                raise InputError("missing", file=file, field=key)
        manifest = cls(**data)
        manifest.validate(file)
        return manifest

    def validate(self, file: str | Path | None = None) -> None:
        """Check types and the consistency of related fields; :class:`InputError` names the field."""

        def need(ok: bool, name: str, problem: str) -> None:
            if not ok:
                raise InputError(problem, file=file, field=name)

        for name in ("name", "base_llm_config_sha256", "language", "description", "elmd_sdk_version"):
            need(isinstance(getattr(self, name), str), name, "must be a string")
        need(bool(self.base_llm_config_sha256), "base_llm_config_sha256", "must not be empty")
        need(self.language in LANGUAGES, "language", f"must be one of {', '.join(LANGUAGES)}, got {self.language!r}")
        labels = self.labels
        need(isinstance(labels, list) and bool(labels), "labels", "must be a non-empty list of strings")
        need(all(isinstance(x, str) and x.strip() for x in labels), "labels", "must hold non-empty strings")
        need(len(set(labels)) == len(labels), "labels", "must not repeat a label")
        for name in ("base_llm", "visual_encoder", "training_data_sha256"):
            value = getattr(self, name)
            need(value is None or (isinstance(value, str) and bool(value)), name, "must be a non-empty string or null")
        for name in ("erm_dir", "index_dir", "projector_dir", "prefix_dir"):
            value = getattr(self, name)
            if value is not None:
                need(isinstance(value, str) and _is_inside(value), name, "must be a relative path inside the bundle")
        fingerprint = self.visual_encoder_fingerprint
        need(fingerprint is None or isinstance(fingerprint, dict), "visual_encoder_fingerprint", "must be an object")
        pre = self.pre_seq_len
        need(pre is None or (is_json_int(pre) and pre > 0), "pre_seq_len", "must be a positive integer or null")
        need((pre is None) == (self.prefix_dir is None), "pre_seq_len", "must be given exactly when prefix_dir is")
        m = self.frames
        need(m is None or (is_json_int(m) and m > 0), "frames", "must be a positive integer or null")
        need(self.erm_dir is None or self.index_dir is not None, "index_dir", "an ERM needs its index")
        need(
            self.projector_dir is None or fingerprint is not None,
            "visual_encoder_fingerprint",
            "a projector needs the fingerprint of the visual encoder it was trained on",
        )
        prior = self.emotion_log_prior
        need(
            prior is None or (isinstance(prior, dict) and sorted(prior) == sorted(labels)),
            "emotion_log_prior",
            "must be null or an object with one value per label",
        )
        if prior is not None:
            check_log_prior(list(prior.values()), len(labels), file=file)
        need(isinstance(self.generation, dict), "generation", "must be an object")
        need(None not in self.generation.values(), "generation", "a setting must not be null (leave it out instead)")
        check_generation(self.generation, file=file, field="generation")
        check_precision(self.dtype, self.quantize, file=file)
        need(isinstance(self.chain, dict), "chain", "must be an object")


@dataclass(frozen=True)
class BundlePaths:
    """Absolute locations of a loaded bundle's parts (None for absent parts)."""

    root: Path
    base_llm: str | None  # resolved path (inside the bundle) or the manifest's name as given; None = default LLM
    erm: Path | None
    index: Path | None
    projector: Path | None
    prefix: Path | None


def _is_inside(relative: str) -> bool:
    """Whether a manifest path is relative and does not climb out of the bundle."""
    path = PurePosixPath(relative.replace("\\", "/"))
    return bool(relative) and not path.is_absolute() and ".." not in path.parts and ":" not in relative


def save_manifest(bundle_dir: str | PathLike[str], manifest: BundleManifest) -> Path:
    """Validate ``manifest`` and write it as ``bundle_dir/bundle.json`` (atomically); returns the file."""
    manifest.validate()
    path = Path(bundle_dir) / MANIFEST_FILE
    atomic_write_json(path, manifest.to_dict())
    return path


def load_bundle(bundle_dir: str | PathLike[str]) -> tuple[BundleManifest, BundlePaths]:
    """Read and check ``bundle.json`` and that every part it names is there (without loading any weights); returns
    the manifest and the parts' paths."""
    root = Path(bundle_dir)
    if not root.is_dir():
        raise InputError("bundle folder not found", file=root)
    file = root / MANIFEST_FILE
    manifest = BundleManifest.from_dict(read_json(file), file)

    def part(name: str) -> Path | None:
        relative = getattr(manifest, name)
        if relative is None:
            return None
        path = path_inside(root, relative, file=file, field=name)
        if not path.is_dir():
            raise InputError(f"the bundle's {name} is missing: {path}", file=file, field=name)
        return path

    base = manifest.base_llm
    if base is not None and _is_inside(base) and (root / base).exists():
        base = str(path_inside(root, base, file=file, field="base_llm"))
    paths = BundlePaths(
        root=root,
        base_llm=base,
        erm=part("erm_dir"),
        index=part("index_dir"),
        projector=part("projector_dir"),
        prefix=part("prefix_dir"),
    )
    return manifest, paths


def verify_components(
    manifest: BundleManifest,
    *,
    llm_fingerprint: Mapping[str, Any] | None = None,
    visual_encoder_fingerprint: Mapping[str, Any] | None = None,
    pre_seq_len: int | None = None,
    source: str | Path = MANIFEST_FILE,
) -> None:
    """Raise :class:`MismatchError` naming the manifest field that disagrees with a loaded component.

    ``llm_fingerprint`` is ``elmd_sdk.models.llm.llm_fingerprint(model)``; ``visual_encoder_fingerprint`` the
    encoder's ``fingerprint()``; ``pre_seq_len`` the length of the prefix about to be applied.
    """
    if llm_fingerprint is not None and llm_fingerprint.get("config_sha256") != manifest.base_llm_config_sha256:
        raise MismatchError(
            f"{source}: field 'base_llm_config_sha256' disagrees: the bundle was made for a base LLM with config hash "
            f"{manifest.base_llm_config_sha256[:12]}..., the loaded LLM ({llm_fingerprint.get('name_or_path')}) has "
            f"{str(llm_fingerprint.get('config_sha256'))[:12]}..."
        )
    expected_visual = manifest.visual_encoder_fingerprint
    if visual_encoder_fingerprint is not None and expected_visual is not None:
        actual = dict(visual_encoder_fingerprint)
        differing = sorted(k for k in expected_visual.keys() | actual.keys() if expected_visual.get(k) != actual.get(k))
        if differing:
            raise MismatchError(
                f"{source}: field 'visual_encoder_fingerprint' disagrees with the loaded visual encoder "
                f"(differs in {', '.join(differing)}): the projector was trained on another encoder"
            )
    if pre_seq_len is not None and pre_seq_len != manifest.pre_seq_len:
        raise MismatchError(
            f"{source}: field 'pre_seq_len' disagrees: the bundle records {manifest.pre_seq_len}, "
            f"the prefix it would apply has {pre_seq_len}"
        )


def data_sha256(files: Iterable[str | Path]) -> str:
    """One SHA-256 over the contents of the training-data files (in the order given)."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(sha256_file(path).encode("ascii"))
    return digest.hexdigest()
