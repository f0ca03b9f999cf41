"""The (u', r') index folder (paper 3.3): save a FAISS store and load it back, checked, without pickle.

The search carrier is langchain-community's ``FAISS`` vector store (inner product over L2-normalised
vectors, so a score is the cosine similarity). Its pickle persistence is replaced by the folder that
:mod:`elmd_sdk.retrievers.index_manifest` describes (FAISS binary, JSON docstore and id map, the manifest last);
:mod:`elmd_sdk.retrievers.index_build` builds one from a corpus.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import faiss
import numpy as np
from langchain_community.docstore.in_memory import InMemoryDocstore
from langchain_community.vectorstores import FAISS
from langchain_community.vectorstores.utils import DistanceStrategy
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.io import atomic_folder, atomic_write_bytes, atomic_write_json, path_inside, read_json, sha256_file
from elmd_sdk.retrievers.index_manifest import (
    DATA_FILES,
    DOCSTORE_FILE,
    FAISS_FILE,
    ID_MAP_FILE,
    MANIFEST_FILE,
    METADATA_FIELDS,
    EncoderSource,
    IndexManifest,
    IndexParams,
    IndexType,
    StoredSource,
    read_manifest,
)

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


class _NoEmbeddings(Embeddings):
    """Placeholder for a store searched by vector only; embedding text through it is an error."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        raise RuntimeError("this FAISS store was loaded without an encoder; search it by vector")

    def embed_query(self, text: str) -> list[float]:
        raise RuntimeError("this FAISS store was loaded without an encoder; search it by vector")


@dataclass
class LoadedIndex:
    """An index folder read back: the LangChain FAISS store and its manifest."""

    store: FAISS
    manifest: IndexManifest
    path: Path


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


def _portable_source(source: EncoderSource | None, index_dir: Path) -> StoredSource | None:
    """Manifest form of ``source``: a local encoder folder under the index's parent is kept relative to the index.

    Other local folders are recorded as absolute paths; a model name (or None, the default) is kept as is.
    """
    if source is None:
        return None
    if source.path is None or not Path(source.path).is_dir():
        return StoredSource(kind=source.kind, path=source.path, relative_to_index=False)
    folder = Path(source.path).resolve()
    index_abs = index_dir.resolve()
    if folder.is_relative_to(index_abs.parent):
        return StoredSource(kind=source.kind, path=os.path.relpath(folder, index_abs), relative_to_index=True)
    return StoredSource(kind=source.kind, path=str(folder), relative_to_index=False)


def resolve_source(manifest: IndexManifest, index_dir: Path) -> EncoderSource | None:
    """The encoder source recorded in a manifest, with a relative ERM path resolved against the index folder."""
    stored = manifest.encoder_source
    if stored is None:
        return None
    path = stored.path
    if path is not None and stored.relative_to_index:  # the ERM beside the index: within the index's parent
        relative = str(Path(index_dir.name) / path)
        path = str(path_inside(index_dir.parent, relative, file=index_dir / MANIFEST_FILE, field="path").resolve())
    return EncoderSource(kind=stored.kind, path=path)


def save_index(
    store: FAISS,
    out_dir: str | Path,
    index_type: IndexType,
    params: IndexParams,
    fingerprint: dict[str, Any],
    source: EncoderSource | None = None,
    baseline: float = 0.0,
) -> IndexManifest:
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
        manifest = IndexManifest(
            index_type=index_type,
            dim=int(index.d),
            count=int(index.ntotal),
            params=params,
            sha256={name: sha256_file(folder / name) for name in DATA_FILES},
            encoder_fingerprint=fingerprint,
            encoder_source=_portable_source(source, out),
            score_baseline=baseline,
        )
        atomic_write_json(folder / MANIFEST_FILE, manifest.to_dict())
    return manifest


def check_fingerprint(manifest: IndexManifest, encoder: TextEncoder, index_dir: str | Path) -> None:
    """Raise :class:`MismatchError` when ``encoder`` is not the one the index was built with."""
    path = Path(index_dir) / MANIFEST_FILE
    expected = manifest.encoder_fingerprint
    actual = json.loads(json.dumps(encoder.fingerprint()))  # compare as it would read back from JSON
    if expected == actual:
        return
    if expected is None:
        raise MismatchError(f"{path}: the index records no encoder fingerprint, the encoder has {actual}")
    keys = sorted(set(expected) | set(actual))
    diff = [
        f"{k}: index {expected.get(k)!r} vs encoder {actual.get(k)!r}" for k in keys if expected.get(k) != actual.get(k)
    ]
    raise MismatchError(f"{path}: index was built with another encoder ({'; '.join(diff)})")


def _check_file(index_dir: Path, name: str, manifest: IndexManifest) -> Path:
    """The data file ``name``, present and with the checksum the manifest records."""
    path = index_dir / name
    if not path.is_file():
        raise InputError("file not found (incomplete index folder)", file=path)
    if manifest.sha256[name] != sha256_file(path):
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
    if encoder is not None:
        check_fingerprint(manifest, encoder, index_dir)
        if encoder.dim != manifest.dim:
            problem = f"index dim {manifest.dim} but the encoder gives {encoder.dim}"
            raise MismatchError(f"{index_dir / MANIFEST_FILE}: {problem}")
    faiss_path = _check_file(index_dir, FAISS_FILE, manifest)
    try:
        index = faiss.deserialize_index(np.frombuffer(faiss_path.read_bytes(), dtype=np.uint8))
    except RuntimeError as exc:
        raise InputError(f"not a readable FAISS index ({str(exc).splitlines()[0]})", file=faiss_path) from None
    for name, value, recorded in (("dim", index.d, manifest.dim), ("count", index.ntotal, manifest.count)):
        if value != recorded:
            raise MismatchError(f"{faiss_path}: FAISS {name} {value} but {MANIFEST_FILE} says {recorded}")
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
    if not isinstance(index, _FAISS_CLASSES[manifest.index_type]) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise MismatchError(
            f"{faiss_path}: holds a FAISS {type(index).__name__} (metric {index.metric_type}), "
            f"not the inner-product {manifest.index_type} index {MANIFEST_FILE} records"
        )
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = nprobe or manifest.params.nprobe
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = ef_search or manifest.params.ef_search
    store = make_store(index, InMemoryDocstore(docs), dict(enumerate(ids)), encoder)
    return LoadedIndex(store=store, manifest=manifest, path=index_dir)


def index_erm_dir(index: str | Path) -> Path | None:
    """The trained ERM folder an index was built with (None for a plain sentence encoder)."""
    index = Path(index)
    source = resolve_source(read_manifest(index), index)
    if source is None or source.kind != "erm" or source.path is None or not Path(source.path).is_dir():
        return None
    return Path(source.path)
