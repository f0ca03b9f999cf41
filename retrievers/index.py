"""FAISS index of (u', r') demonstration pairs (paper 3.3): build, save and load without pickle.

The search carrier is langchain-community's ``FAISS`` vector store (inner product over L2-normalised
vectors, so a score is the cosine similarity). Its pickle persistence is replaced by an index folder:

- ``index.faiss``: the vectors, in FAISS's own binary format;
- ``docstore.json``: one document per entry (``page_content`` = r', metadata = u', emotions, dialogue id);
- ``id_map.json``: docstore id of each FAISS row, in row order;
- ``index.json``: the manifest (format version, index type, dim, count, encoder fingerprint and source,
  SHA-256 of each data file). It is written last, so a folder whose write was interrupted fails its checks.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import faiss
import numpy as np
from langchain_community.docstore.in_memory import InMemoryDocstore
from langchain_community.vectorstores import FAISS
from langchain_community.vectorstores.utils import DistanceStrategy
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from elmd_sdk.data.records import Sample
from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.io import atomic_folder, atomic_write_bytes, atomic_write_json, path_inside, read_json, sha256_file
from elmd_sdk.progress import make_progress

FORMAT_VERSION = 1
FAISS_FILE = "index.faiss"
DOCSTORE_FILE = "docstore.json"
ID_MAP_FILE = "id_map.json"
MANIFEST_FILE = "index.json"
INDEX_TYPES = ("flat", "hnsw", "ivf")
METADATA_FIELDS = ("utterance", "utterance_emotion", "response", "response_emotion", "dialogue_id")
IndexType = Literal["flat", "hnsw", "ivf"]
_FAISS_CLASSES = {"flat": faiss.IndexFlat, "hnsw": faiss.IndexHNSW, "ivf": faiss.IndexIVF}


@runtime_checkable
class TextEncoder(Protocol):
    """What the index needs from an encoder (``ERMEncoder`` or a plain sentence encoder)."""

    @property
    def dim(self) -> int:
        """Embedding width."""
        ...

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """(n, dim) float32, L2-normalised: inner product is the similarity."""
        ...

    def fingerprint(self) -> dict[str, Any]:
        """JSON-ready identity, compared on load to catch an index built with another encoder."""
        ...


class EncoderEmbeddings(Embeddings):
    """LangChain ``Embeddings`` view of a :class:`TextEncoder`, so the FAISS store can embed queries itself."""

    def __init__(self, encoder: TextEncoder, batch_size: int = 64) -> None:
        self.encoder = encoder
        self.batch_size = batch_size

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed texts as lists of floats (LangChain's interface)."""
        return self.encoder.encode(texts, batch_size=self.batch_size).tolist()

    def embed_query(self, text: str) -> list[float]:
        """Embed one query."""
        return self.embed_documents([text])[0]


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


@dataclass(frozen=True)
class EncoderSource:
    """Where the index's encoder comes from: a trained ERM folder or a plain sentence-transformers model.

    ``path`` is the ERM folder, or the model name/path of a plain encoder (None = offline default MiniLM).
    """

    kind: Literal["erm", "plain"]
    path: str | None = None


@dataclass(frozen=True)
class IndexEntry:
    """One retrievable demonstration: utterance u' (what is embedded) and its response r'."""

    utterance: str
    utterance_emotion: str | None
    response: str
    response_emotion: str | None
    dialogue_id: str

    @classmethod
    def from_sample(cls, sample: Sample) -> IndexEntry:
        """The (u, r) pair of a corpus sample."""
        return cls(
            utterance=sample.utterance.text,
            utterance_emotion=sample.utterance.emotion,
            response=sample.response.text,
            response_emotion=sample.response.emotion,
            dialogue_id=sample.dialogue_id,
        )

    def to_document(self) -> Document:
        """The LangChain document: page_content is r', metadata holds u', both emotions and the dialogue id."""
        return Document(
            page_content=self.response,
            metadata={name: getattr(self, name) for name in METADATA_FIELDS},
        )


@dataclass
class LoadedIndex:
    """An index folder read back: the LangChain FAISS store and its manifest."""

    store: FAISS
    manifest: dict[str, Any]
    path: Path


def encode_texts(
    encoder: TextEncoder, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False
) -> np.ndarray:
    """Encode ``texts`` in chunks of whole batches with a rich progress bar; (n, dim) float32 in input order.

    Texts are encoded longest first, so each batch holds texts of similar length and little padding
    (sentence-transformers sorts only within one ``encode`` call, i.e. within one chunk).
    """
    chunk = batch_size * 16
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)  # (n, dim)
    with make_progress(disable=None if show_progress else True) as progress:
        task = progress.add_task("encoding", total=len(texts), info="")
        for start in range(0, len(texts), chunk):
            rows = order[start : start + chunk]
            out[rows] = encoder.encode([texts[i] for i in rows], batch_size=batch_size)  # (c, dim)
            progress.update(task, advance=len(rows), info=f"dim {encoder.dim}")
    return out


def make_faiss_index(vectors: np.ndarray, config: IndexConfig) -> faiss.Index:
    """A FAISS inner-product index of the configured type holding ``vectors`` (n, dim); IVF is trained on them."""
    n, dim = vectors.shape
    index: faiss.Index
    if config.index_type == "flat":
        index = faiss.IndexFlatIP(dim)
    elif config.index_type == "hnsw":
        index = faiss.IndexHNSWFlat(dim, config.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = config.ef_construction
        index.hnsw.efSearch = config.ef_search
    else:
        nlist = config.nlist or default_nlist(n)
        if n < nlist:
            raise InputError(
                f"IVF with nlist={nlist} needs at least {nlist} entries, the corpus has {n}", field="nlist"
            )
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = config.nprobe
    index.add(vectors)
    return index


def default_nlist(n: int) -> int:
    """IVF list count for ``n`` vectors: ``4 * sqrt(n)``, at least 1 and at most ``n``."""
    return max(1, min(n, round(4 * math.sqrt(n))))


def build_store(vectors: np.ndarray, entries: Sequence[IndexEntry], config: IndexConfig, encoder: TextEncoder) -> FAISS:
    """The LangChain FAISS store over ``vectors`` (n, dim), row i being ``entries[i]``."""
    if len(vectors) != len(entries):
        raise ValueError(f"{len(vectors)} vectors for {len(entries)} entries")
    index = make_faiss_index(np.ascontiguousarray(vectors, dtype=np.float32), config)
    ids = [str(i) for i in range(len(entries))]
    docstore = InMemoryDocstore({doc_id: entry.to_document() for doc_id, entry in zip(ids, entries, strict=True)})
    return make_store(index, docstore, dict(enumerate(ids)), encoder)


def make_store(
    index: faiss.Index, docstore: InMemoryDocstore, id_map: dict[int, str], encoder: TextEncoder | None
) -> FAISS:
    """Wrap a FAISS index in langchain-community's store with inner-product scores (vectors are pre-normalised)."""
    embeddings = EncoderEmbeddings(encoder) if encoder is not None else _NoEmbeddings()
    return FAISS(
        embedding_function=embeddings,
        index=index,
        docstore=docstore,
        index_to_docstore_id=id_map,
        distance_strategy=DistanceStrategy.MAX_INNER_PRODUCT,
        normalize_L2=False,
    )


class _NoEmbeddings(Embeddings):
    """Placeholder for a store searched by vector only; embedding text through it is an error."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise RuntimeError("this FAISS store was loaded without an encoder; search it by vector")

    def embed_query(self, text: str) -> list[float]:
        raise RuntimeError("this FAISS store was loaded without an encoder; search it by vector")


def build_index(
    encoder: TextEncoder,
    samples: Iterable[Sample],
    out_dir: str | Path,
    index_type: IndexType = "flat",
    *,
    source: EncoderSource | None = None,
    nlist: int | None = None,
    nprobe: int = 8,
    hnsw_m: int = 32,
    ef_search: int = 64,
    batch_size: int = 64,
    show_progress: bool = False,
) -> LoadedIndex:
    """Embed each sample's utterance u' with ``encoder`` and save the (u', r') index folder ``out_dir``.

    ``source`` records how to re-create the encoder at load time (an ERM folder lying beside or inside the
    index's parent folder is stored relative to the index, so the pair can be moved together).
    """
    config = IndexConfig(index_type=index_type, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search)
    entries = [IndexEntry.from_sample(s) for s in samples]
    if not entries:
        raise InputError("the corpus has no samples to index")
    vectors = encode_texts(encoder, [e.utterance for e in entries], batch_size, show_progress)  # (n, dim)
    if vectors.shape != (len(entries), encoder.dim):
        raise MismatchError(f"encoder returned shape {vectors.shape}, expected ({len(entries)}, {encoder.dim})")
    store = build_store(vectors, entries, config, encoder)
    out = Path(out_dir)
    manifest = save_index(store, out, config, encoder.fingerprint(), source, score_baseline(vectors))
    return LoadedIndex(store=store, manifest=manifest, path=out)


def score_baseline(vectors: np.ndarray, pairs: int = 4096, seed: int = 0) -> float:
    """Mean inner product of ``pairs`` random pairs of distinct corpus vectors (n, dim): how similar two unrelated
    utterances look to this encoder. The retriever reports scores relative to it (0 = as similar as a random pair,
    1 = identical); an ERM's set vectors share a large constant part, which puts every raw cosine near 0.99."""
    n = len(vectors)
    if n < 2:
        return 0.0
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n, size=pairs)
    second = (first + rng.integers(1, n, size=pairs)) % n  # never the same row
    return float(np.einsum("ij,ij->i", vectors[first], vectors[second]).mean())


def _portable_source(source: EncoderSource | None, index_dir: Path) -> dict[str, Any] | None:
    """Manifest form of ``source``: a local encoder folder under the index's parent is kept relative to the index.

    Other local folders are recorded as absolute paths; a model name (or None, the default) is kept as is.
    """
    if source is None:
        return None
    if source.path is None or not Path(source.path).is_dir():
        return {"kind": source.kind, "path": source.path, "relative_to_index": False}
    folder = Path(source.path).resolve()
    index_abs = index_dir.resolve()
    if folder.is_relative_to(index_abs.parent):
        return {"kind": source.kind, "path": os.path.relpath(folder, index_abs), "relative_to_index": True}
    return {"kind": source.kind, "path": str(folder), "relative_to_index": False}


def resolve_source(manifest: dict[str, Any], index_dir: Path) -> EncoderSource | None:
    """The encoder source recorded in a manifest, with a relative ERM path resolved against the index folder."""
    raw = manifest.get("encoder_source")
    if raw is None:
        return None
    manifest_file = index_dir / MANIFEST_FILE
    if not isinstance(raw, dict) or raw.get("kind") not in ("erm", "plain"):
        raise InputError("must be an object with kind 'erm' or 'plain'", file=manifest_file,
                         field="encoder_source")  # fmt: skip
    path = raw.get("path")
    if path is not None and not isinstance(path, str):
        raise InputError(f"must be a string or null, got {path!r}", file=manifest_file, field="encoder_source.path")
    if path is not None and raw.get("relative_to_index"):  # the ERM beside the index: within the index's parent
        path = str(
            path_inside(index_dir.parent, str(Path(index_dir.name) / path), file=manifest_file, field="path").resolve()
        )
    return EncoderSource(kind=raw["kind"], path=path)


def save_index(
    store: FAISS,
    out_dir: str | Path,
    config: IndexConfig,
    fingerprint: dict[str, Any],
    source: EncoderSource | None = None,
    baseline: float = 0.0,
) -> dict[str, Any]:
    """Write ``store`` as FAISS binary + JSON into a new folder that then replaces ``out_dir`` as a whole
    (:func:`elmd_sdk.io.atomic_folder`: a kill leaves the old complete index or the new one); the manifest."""
    out = Path(out_dir)
    index = store.index
    ids = [store.index_to_docstore_id[i] for i in range(index.ntotal)]
    documents = []
    for doc_id in ids:
        doc = store.docstore.search(doc_id)
        if not isinstance(doc, Document):
            raise ValueError(f"docstore has no document for id {doc_id}")
        documents.append({"id": doc_id, "page_content": doc.page_content, "metadata": doc.metadata})
    with atomic_folder(out) as folder:
        atomic_write_bytes(folder / FAISS_FILE, faiss.serialize_index(index).tobytes())
        atomic_write_json(folder / DOCSTORE_FILE, {"documents": documents})
        atomic_write_json(folder / ID_MAP_FILE, ids)
        manifest = {
            "format_version": FORMAT_VERSION,
            "index_type": config.index_type,
            "metric": "inner_product",
            "dim": int(index.d),
            "count": int(index.ntotal),
            "params": {
                "nlist": int(index.nlist) if config.index_type == "ivf" else None,
                "nprobe": config.nprobe,
                "hnsw_m": config.hnsw_m,
                "ef_search": config.ef_search,
            },
            "encoder_fingerprint": fingerprint,
            "score_baseline": baseline,
            "encoder_source": _portable_source(source, out),
            "sha256": {name: sha256_file(folder / name) for name in (FAISS_FILE, DOCSTORE_FILE, ID_MAP_FILE)},
        }
        atomic_write_json(folder / MANIFEST_FILE, manifest)
    return manifest


def read_manifest(index_dir: str | Path) -> dict[str, Any]:
    """Read and check ``index.json`` of an index folder (InputError naming the file and field if bad)."""
    index_dir = Path(index_dir)
    if not index_dir.is_dir():
        raise InputError("index folder not found", file=index_dir)
    path = index_dir / MANIFEST_FILE
    manifest = read_json(path)
    if not isinstance(manifest, dict):
        raise InputError("expected a JSON object", file=path)
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise InputError(f"unsupported index format {version!r} (this elmd-sdk reads {FORMAT_VERSION})", file=path)
    for name, kind in (("index_type", str), ("dim", int), ("count", int), ("sha256", dict), ("params", dict)):
        if not isinstance(manifest.get(name), kind):
            raise InputError(f"missing or not a {kind.__name__}", file=path, field=name)
    if manifest["index_type"] not in INDEX_TYPES:
        raise InputError(f"unknown index type {manifest['index_type']!r}", file=path, field="index_type")
    baseline = manifest.setdefault("score_baseline", 0.0)  # indexes written before it was recorded: raw scores
    if isinstance(baseline, bool) or not isinstance(baseline, int | float) or not -1.0 <= baseline < 1.0:
        raise InputError(f"must be a number in [-1, 1), got {baseline!r}", file=path, field="score_baseline")
    return manifest


def check_fingerprint(manifest: dict[str, Any], encoder: TextEncoder, index_dir: str | Path) -> None:
    """Raise :class:`MismatchError` when ``encoder`` is not the one the index was built with."""
    path = Path(index_dir) / MANIFEST_FILE
    expected = manifest.get("encoder_fingerprint")
    actual = json.loads(json.dumps(encoder.fingerprint()))  # compare as it would read back from JSON
    if expected == actual:
        return
    if not isinstance(expected, dict):
        raise MismatchError(f"{path}: the index records no encoder fingerprint, the encoder has {actual}")
    keys = sorted(set(expected) | set(actual))
    diff = [
        f"{k}: index {expected.get(k)!r} vs encoder {actual.get(k)!r}" for k in keys if expected.get(k) != actual.get(k)
    ]
    raise MismatchError(f"{path}: index was built with another encoder ({'; '.join(diff)})")


def _check_file(index_dir: Path, name: str, manifest: dict[str, Any]) -> Path:
    """The data file ``name``, present and with the checksum the manifest records."""
    path = index_dir / name
    if not path.is_file():
        raise InputError("file not found (incomplete index folder)", file=path)
    expected = manifest["sha256"].get(name)
    if expected != sha256_file(path):
        raise InputError(f"damaged or replaced: SHA-256 differs from {MANIFEST_FILE}", file=path)
    return path


def _read_documents(path: Path) -> dict[str, Document]:
    """Docstore JSON to {id: Document}, checking every document's fields."""
    raw = read_json(path)
    docs = raw.get("documents") if isinstance(raw, dict) else None
    if not isinstance(docs, list):
        raise InputError("expected an object with a 'documents' list", file=path, field="documents")
    out: dict[str, Document] = {}
    for i, item in enumerate(docs):
        if not isinstance(item, dict):
            raise InputError(f"document {i} is not an object", file=path, field="documents")
        metadata = item.get("metadata")
        if not isinstance(item.get("id"), str) or not isinstance(item.get("page_content"), str):
            raise InputError(f"document {i} needs a string 'id' and 'page_content'", file=path, field="documents")
        if not isinstance(metadata, dict) or any(name not in metadata for name in METADATA_FIELDS):
            raise InputError(f"document {i} metadata needs {', '.join(METADATA_FIELDS)}", file=path, field="metadata")
        out[item["id"]] = Document(page_content=item["page_content"], metadata=metadata)
    return out


def load_index(
    index_dir: str | Path,
    encoder: TextEncoder | None = None,
    *,
    nprobe: int | None = None,
    ef_search: int | None = None,
) -> LoadedIndex:
    """Read an index folder back into a LangChain FAISS store, checking checksums, counts, dim and encoder.

    ``encoder`` (if given) must have the fingerprint recorded in the manifest. ``nprobe``/``ef_search``
    override the IVF/HNSW query-time defaults recorded at build time.
    """
    index_dir = Path(index_dir)
    manifest = read_manifest(index_dir)
    manifest_path = index_dir / MANIFEST_FILE
    if encoder is not None:
        check_fingerprint(manifest, encoder, index_dir)
        if encoder.dim != manifest["dim"]:
            raise MismatchError(f"{manifest_path}: index dim {manifest['dim']} but the encoder gives {encoder.dim}")
    faiss_path = _check_file(index_dir, FAISS_FILE, manifest)
    try:
        index = faiss.deserialize_index(np.frombuffer(faiss_path.read_bytes(), dtype=np.uint8))
    except RuntimeError as exc:
        raise InputError(f"not a readable FAISS index ({str(exc).splitlines()[0]})", file=faiss_path) from None
    for name, value in (("dim", index.d), ("count", index.ntotal)):
        if value != manifest[name]:
            raise MismatchError(f"{faiss_path}: FAISS {name} {value} but {MANIFEST_FILE} says {manifest[name]}")
    ids = read_json(_check_file(index_dir, ID_MAP_FILE, manifest))
    id_map_path = index_dir / ID_MAP_FILE
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise InputError("expected a JSON list of string ids", file=id_map_path)
    if len(ids) != index.ntotal:
        raise MismatchError(f"{id_map_path}: {len(ids)} ids but the FAISS index holds {index.ntotal} vectors")
    docs = _read_documents(_check_file(index_dir, DOCSTORE_FILE, manifest))
    missing = [i for i in ids if i not in docs]
    if missing or len(docs) != len(ids):
        raise MismatchError(
            f"{index_dir / DOCSTORE_FILE}: {len(docs)} documents do not match the {len(ids)} ids of {ID_MAP_FILE}"
            + (f" (missing e.g. {missing[0]!r})" if missing else "")
        )
    index_type = manifest["index_type"]
    if not isinstance(index, _FAISS_CLASSES[index_type]) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise MismatchError(
            f"{faiss_path}: holds a FAISS {type(index).__name__} (metric {index.metric_type}), "
            f"not the inner-product {index_type} index {MANIFEST_FILE} records"
        )
    params = manifest["params"]
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = nprobe or params.get("nprobe") or 8
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = ef_search or params.get("ef_search") or 64
    store = make_store(index, InMemoryDocstore(docs), dict(enumerate(ids)), encoder)
    return LoadedIndex(store=store, manifest=manifest, path=index_dir)
