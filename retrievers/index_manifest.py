"""The index manifest ``index.json``: what an index folder holds, its checks, and the names of its files.

An index folder of (u', r') demonstration pairs (paper 3.3) holds, without pickle:

- ``index.faiss``: the vectors, in FAISS's own binary format;
- ``docstore.json``: one document per entry (``page_content`` = r', metadata = u', emotions, dialogue id);
- ``id_map.json``: docstore id of each FAISS row, in row order;
- ``index.json``: the manifest (:class:`IndexManifest`): format version, index type, dim, count, FAISS parameters,
  encoder fingerprint and source, score baseline, SHA-256 of each data file. It is written last, so a folder whose
  write was interrupted fails its checks.

:func:`read_manifest` refuses a missing, unknown or mistyped field with an :class:`InputError` naming the file and
the field; :mod:`elmd_sdk.retrievers.index` writes and loads the folder, :mod:`elmd_sdk.retrievers.index_build`
builds it from a corpus.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

from elmd_sdk.errors import InputError
from elmd_sdk.io import is_json_int, is_json_number, read_json

Need = Callable[[bool, str, str], None]  # need(ok, field, problem): an InputError naming the field unless ok

FORMAT_VERSION = 1
MAX_SCORE_BASELINE = 0.999
"""The highest score baseline an index records. A float32 cosine is exact to about 2e-6 (a 1536-dim inner product),
and the relative score divides that error by ``1 - baseline``: at 0.999 it stays within 2e-3. An encoder whose random
pairs look more alike than that (an untrained or collapsed ERM, a corpus of near-identical utterances) gets this
baseline, and :func:`~elmd_sdk.retrievers.index_build.build_index` says so."""
FAISS_FILE = "index.faiss"
DOCSTORE_FILE = "docstore.json"
ID_MAP_FILE = "id_map.json"
MANIFEST_FILE = "index.json"
DATA_FILES = (FAISS_FILE, DOCSTORE_FILE, ID_MAP_FILE)
INDEX_TYPES = ("flat", "hnsw", "ivf")
IndexType = Literal["flat", "hnsw", "ivf"]
METRIC = "inner_product"  # over L2-normalised vectors: a score is the cosine similarity
SOURCE_KINDS = ("erm", "plain")
METADATA_FIELDS = ("utterance", "utterance_emotion", "response", "response_emotion", "dialogue_id")  # docstore.json


@dataclass(frozen=True)
class EncoderSource:
    """Where the index's encoder comes from: a trained ERM folder or a plain sentence-transformers model.

    ``path`` is the ERM folder, or the model name/path of a plain encoder (None = offline default MiniLM).
    """

    kind: Literal["erm", "plain"]
    path: str | None = None


@dataclass(frozen=True)
class StoredSource:
    """:class:`EncoderSource` as the manifest records it: an encoder folder beside the index is relative to it."""

    kind: Literal["erm", "plain"]
    path: str | None
    relative_to_index: bool  # path is relative to the index folder and stays inside the index's parent


@dataclass(frozen=True)
class IndexParams:
    """The FAISS parameters the index was built with, and the query-time defaults it records."""

    nlist: int | None  # IVF lists (None for flat and HNSW)
    nprobe: int  # IVF lists searched per query
    hnsw_m: int  # HNSW neighbours per node
    ef_search: int  # HNSW candidates kept per query


@dataclass
class IndexManifest:
    """What ``index.json`` holds: the FAISS index's type and shape, the data files' checksums and the encoder."""

    index_type: IndexType
    dim: int  # vector width, the encoder's dim
    count: int  # entries (FAISS rows, ids, documents)
    params: IndexParams
    sha256: dict[str, str]  # data file name -> SHA-256 of its bytes
    encoder_fingerprint: dict[str, Any] | None  # the encoder's fingerprint(), compared when loading with an encoder
    encoder_source: StoredSource | None = None  # how to re-create the encoder; None: the loader passes one
    score_baseline: float = 0.0  # mean similarity of two random entries (indexes from before it: 0, raw scores)
    metric: str = METRIC
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, file: str | Path) -> IndexManifest:
        """Build from parsed JSON, with an :class:`InputError` naming the file and the first missing, unknown or
        bad field."""

        def need(ok: bool, name: str, problem: str) -> None:
            if not ok:
                raise InputError(problem, file=file, field=name)

        if not isinstance(data, dict):
            raise InputError("expected a JSON object", file=file)
        version = data.get("format_version")
        need(
            is_json_int(version) and version == FORMAT_VERSION,
            "format_version",
            f"unsupported index format {version!r} (this elmd-sdk reads {FORMAT_VERSION})",
        )
        known = [f.name for f in fields(cls)]
        for key in data:
            need(key in known, key, f"unknown field (known: {', '.join(sorted(known))})")
        for key in ("index_type", "dim", "count", "params", "sha256", "encoder_fingerprint"):
            need(key in data, key, "missing")
        need(data["index_type"] in INDEX_TYPES, "index_type", f"unknown index type {data['index_type']!r}")
        for key in ("dim", "count"):
            need(_is_count(data[key], 1), key, f"must be a positive integer, got {data[key]!r}")
        need(data.get("metric", METRIC) == METRIC, "metric", f"must be {METRIC!r} (the only metric elmd-sdk builds)")
        checksums = data["sha256"]
        need(isinstance(checksums, dict), "sha256", "must be an object of file name -> SHA-256")
        for name in DATA_FILES:
            need(isinstance(checksums.get(name), str), "sha256", f"needs the SHA-256 of {name}")
        fingerprint = data["encoder_fingerprint"]
        need(fingerprint is None or isinstance(fingerprint, dict), "encoder_fingerprint", "must be an object or null")
        baseline = data.get("score_baseline", 0.0)
        need(
            is_json_number(baseline) and -1.0 <= baseline <= MAX_SCORE_BASELINE,
            "score_baseline",
            f"must be a number in [-1, {MAX_SCORE_BASELINE}], got {baseline!r}",
        )
        return cls(
            index_type=data["index_type"],
            dim=data["dim"],
            count=data["count"],
            params=_params(data["params"], need),
            sha256=checksums,
            encoder_fingerprint=fingerprint,
            encoder_source=_source(data.get("encoder_source"), need),
            score_baseline=float(baseline),
            metric=data.get("metric", METRIC),
            format_version=FORMAT_VERSION,
        )


def read_manifest(index_dir: str | Path) -> IndexManifest:
    """Read and check ``index.json`` of an index folder (an :class:`InputError` naming the file and field if bad)."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise InputError("index folder not found", file=index_dir)
    path = index_dir / MANIFEST_FILE
    return IndexManifest.from_dict(read_json(path), path)


def _is_count(value: Any, low: int) -> bool:
    return is_json_int(value) and value >= low


def _params(raw: Any, need: Need) -> IndexParams:
    """``params`` of the manifest: nlist (IVF, else null) and the positive query-time settings."""
    need(isinstance(raw, dict), "params", "must be an object")
    names = [f.name for f in fields(IndexParams)]
    for key in raw:
        need(key in names, f"params.{key}", f"unknown setting (known: {', '.join(names)})")
    nlist = raw.get("nlist")
    need(nlist is None or _is_count(nlist, 1), "params.nlist", f"must be a positive integer or null, got {nlist!r}")
    for key in ("nprobe", "hnsw_m", "ef_search"):
        need(_is_count(raw.get(key), 1), f"params.{key}", f"must be a positive integer, got {raw.get(key)!r}")
    return IndexParams(nlist=nlist, nprobe=raw["nprobe"], hnsw_m=raw["hnsw_m"], ef_search=raw["ef_search"])


def _source(raw: Any, need: Need) -> StoredSource | None:
    """``encoder_source`` of the manifest (None when the index records none)."""
    if raw is None:
        return None
    need(
        isinstance(raw, dict) and raw.get("kind") in SOURCE_KINDS,
        "encoder_source",
        "must be an object with kind 'erm' or 'plain'",
    )
    path = raw.get("path")
    need(path is None or isinstance(path, str), "encoder_source.path", f"must be a string or null, got {path!r}")
    relative = raw.get("relative_to_index", False)
    need(isinstance(relative, bool), "encoder_source.relative_to_index", "must be true or false")
    return StoredSource(kind=raw["kind"], path=path, relative_to_index=relative)


@dataclass(frozen=True)
class IndexConfig:
    """FAISS index choice: ``flat`` (exact, small corpora), ``hnsw`` or ``ivf`` (approximate, large corpora).

    ``nlist`` (IVF lists) defaults to ``4 * sqrt(n)``; ``nprobe`` (IVF) and ``ef_search`` (HNSW) are the
    query-time defaults recorded in the manifest and can be overridden when loading.
    """

    index_type: IndexType = "flat"
    nlist: int | None = None
    nprobe: int = 8
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 64

    def __post_init__(self) -> None:
        if self.index_type not in INDEX_TYPES:
            raise InputError(f"unknown index type '{self.index_type}'; choose one of {', '.join(INDEX_TYPES)}")
        for name in ("nprobe", "hnsw_m", "ef_construction", "ef_search"):
            if getattr(self, name) < 1:
                raise InputError(f"must be at least 1, got {getattr(self, name)}", field=name)
        if self.nlist is not None and self.nlist < 1:
            raise InputError(f"must be at least 1, got {self.nlist}", field="nlist")
