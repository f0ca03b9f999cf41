"""Each check of index loading on its own: a folder that passes every other check but this one is refused, naming
what disagrees (encoder dimension, metric, id and document counts)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pytest
from retriever_fakes import HashEncoder, tiny_corpus

from elmd_sdk.errors import MismatchError
from elmd_sdk.retrievers import build_index, load_index
from elmd_sdk.retrievers.index_manifest import DOCSTORE_FILE, FAISS_FILE, ID_MAP_FILE, MANIFEST_FILE


@pytest.fixture
def index(tmp_path: Path) -> Path:
    build_index(HashEncoder(dim=64), tiny_corpus(), tmp_path / "index")  # 24 entries
    return tmp_path / "index"


def _replace(index: Path, name: str, data: bytes) -> None:
    """Write a data file and record its new checksum, so only the content can disagree."""
    (index / name).write_bytes(data)
    manifest = json.loads((index / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest["sha256"][name] = hashlib.sha256(data).hexdigest()
    (index / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")


def _json(value: Any) -> bytes:
    return json.dumps(value).encode("utf-8")


class _NarrowEncoder(HashEncoder):
    """Claims the index's fingerprint (dim 64, no salt) but encodes 32 dimensions: a buggy or mislabelled encoder."""

    def fingerprint(self) -> dict[str, Any]:
        return HashEncoder(dim=64).fingerprint()


def test_an_encoder_of_another_width_is_refused_even_with_the_same_fingerprint(index: Path) -> None:
    encoder = _NarrowEncoder(dim=32)
    assert encoder.fingerprint() == HashEncoder(dim=64).fingerprint()
    with pytest.raises(MismatchError, match=r"index\.json: index dim 64 but the encoder gives 32"):
        load_index(index, encoder)
    assert load_index(index, HashEncoder(dim=64)).store.index.ntotal == 24


def test_a_faiss_index_with_another_metric_is_refused(index: Path) -> None:
    inner = faiss.read_index(str(index / FAISS_FILE))
    vectors = inner.reconstruct_n(0, inner.ntotal)  # (24, 64)
    l2 = faiss.IndexFlatL2(64)  # same class family, dim and count; only the metric differs
    l2.add(np.ascontiguousarray(vectors))
    _replace(index, FAISS_FILE, faiss.serialize_index(l2).tobytes())
    with pytest.raises(
        MismatchError, match=r"index\.faiss: holds a FAISS IndexFlatL2 \(metric 1\), not the inner-product"
    ):
        load_index(index)


def test_an_id_map_of_another_length_is_refused(index: Path) -> None:
    ids = json.loads((index / ID_MAP_FILE).read_text(encoding="utf-8"))
    _replace(index, ID_MAP_FILE, _json(ids[:-1]))
    with pytest.raises(MismatchError, match=r"id_map\.json: 23 ids but the FAISS index holds 24 vectors"):
        load_index(index)


def test_a_docstore_with_an_extra_document_is_refused(index: Path) -> None:
    store = json.loads((index / DOCSTORE_FILE).read_text(encoding="utf-8"))
    extra = {**store["documents"][0], "id": "stray"}
    _replace(index, DOCSTORE_FILE, _json({"documents": [*store["documents"], extra]}))
    with pytest.raises(MismatchError, match=r"docstore\.json: 25 documents do not match the 24 ids of id_map\.json$"):
        load_index(index)


def test_a_docstore_missing_a_document_is_refused(index: Path) -> None:
    store = json.loads((index / DOCSTORE_FILE).read_text(encoding="utf-8"))
    renamed = [*store["documents"][:-1], {**store["documents"][-1], "id": "other"}]  # 24 documents, one id unknown
    _replace(index, DOCSTORE_FILE, _json({"documents": renamed}))
    last = json.loads((index / ID_MAP_FILE).read_text(encoding="utf-8"))[-1]
    with pytest.raises(
        MismatchError, match=rf"24 documents do not match the 24 ids of id_map\.json \(missing e\.g\. '{last}'\)"
    ):
        load_index(index)
