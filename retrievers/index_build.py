"""Building the (u', r') demonstration index (paper 3.3): embed each corpus utterance u', put the vectors in a FAISS
index of the chosen type and save the folder (:func:`elmd_sdk.retrievers.index.save_index`)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from langchain_community.docstore.in_memory import InMemoryDocstore
from langchain_community.vectorstores import FAISS
from langchain_core.documents import Document

from elmd_sdk.data.records import Sample
from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.retrievers.encoder import encode_in_chunks
from elmd_sdk.retrievers.index import LoadedIndex, TextEncoder, make_store, save_index
from elmd_sdk.retrievers.index_manifest import (
    MAX_SCORE_BASELINE,
    METADATA_FIELDS,
    EncoderSource,
    IndexConfig,
    IndexParams,
    IndexType,
    read_manifest,
)
from elmd_sdk.sharding import is_main_process, shard_map, wait_for_everyone


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


def build_index(
    encoder: TextEncoder,
    samples: Iterable[Sample],
    out_dir: str | Path,
    index_type: IndexType = IndexConfig.index_type,
    *,
    source: EncoderSource | None = None,
    nlist: int | None = IndexConfig.nlist,
    nprobe: int = IndexConfig.nprobe,
    hnsw_m: int = IndexConfig.hnsw_m,
    ef_search: int = IndexConfig.ef_search,
    batch_size: int = 64,
    show_progress: bool = False,
) -> LoadedIndex:
    """Embed each sample's utterance u' with ``encoder`` and save the (u', r') index folder ``out_dir``; under
    ``accelerate launch`` the processes share the embedding and the main process writes the folder.

    ``source`` records how to re-create the encoder at load time (an ERM folder lying beside or inside the
    index's parent folder is stored relative to the index, so the pair can be moved together).
    """
    config = IndexConfig(index_type=index_type, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search)
    entries = [IndexEntry.from_sample(s) for s in samples]
    if not entries:
        raise InputError("the corpus has no samples to index")
    vectors = np.stack(
        shard_map(
            lambda texts: list(
                encode_in_chunks(
                    lambda chunk: encoder.encode(chunk, batch_size=batch_size),
                    texts,
                    encoder.dim,
                    batch_size * 16,
                    longest_first=True,
                    show_progress=show_progress and is_main_process(),
                )
            ),
            [e.utterance for e in entries],
        )
    )  # (n, dim): under accelerate launch each process embeds its share
    if vectors.shape != (len(entries), encoder.dim):
        raise MismatchError(f"encoder returned shape {vectors.shape}, expected ({len(entries)}, {encoder.dim})")
    store = build_store(vectors, entries, config, encoder)
    params = IndexParams(
        nlist=int(store.index.nlist) if config.index_type == "ivf" else None,
        nprobe=config.nprobe,
        hnsw_m=config.hnsw_m,
        ef_search=config.ef_search,
    )
    baseline = score_baseline(vectors)
    if baseline > MAX_SCORE_BASELINE:
        warnings.warn(
            f"random pairs of this corpus have a mean similarity of {baseline:.6f}: the encoder hardly tells its "
            f"utterances apart (an untrained or collapsed ERM?); scores are relative to {MAX_SCORE_BASELINE} instead",
            stacklevel=2,
        )
        baseline = MAX_SCORE_BASELINE
    out = Path(out_dir)
    manifest = None
    if is_main_process():  # one process writes the folder, the others read its manifest back
        manifest = save_index(store, out, config.index_type, params, encoder.fingerprint(), source, baseline)
    wait_for_everyone()
    return LoadedIndex(store=store, manifest=manifest or read_manifest(out), path=out)


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
