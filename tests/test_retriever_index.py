"""FAISS index storage: build, save as FAISS binary + JSON, load back, and clear errors on damage or mismatch."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest
from retriever_fakes import HashEncoder, tiny_corpus

from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.paths import default_bundle_path
from elmd_sdk.retrievers.index import load_index, resolve_source
from elmd_sdk.retrievers.index_build import IndexConfig, build_index, default_nlist
from elmd_sdk.retrievers.index_manifest import (
    DOCSTORE_FILE,
    FAISS_FILE,
    ID_MAP_FILE,
    MANIFEST_FILE,
    MAX_SCORE_BASELINE,
    EncoderSource,
    IndexManifest,
    IndexParams,
    StoredSource,
    read_manifest,
)
from elmd_sdk.retrievers.retriever import EmotionalRetriever


@pytest.fixture
def encoder() -> HashEncoder:
    return HashEncoder(dim=64)


@pytest.fixture
def flat_index(tmp_path: Path, encoder: HashEncoder) -> Path:
    out = tmp_path / "index"
    build_index(encoder, tiny_corpus(), out)
    return out


def test_saved_folder_has_faiss_binary_json_and_manifest_only(flat_index: Path, encoder: HashEncoder) -> None:
    assert sorted(p.name for p in flat_index.iterdir()) == sorted(
        [FAISS_FILE, DOCSTORE_FILE, ID_MAP_FILE, MANIFEST_FILE]
    )
    manifest = json.loads((flat_index / MANIFEST_FILE).read_text())
    assert manifest["index_type"] == "flat"
    assert manifest["count"] == 24
    assert manifest["dim"] == 64
    assert manifest["metric"] == "inner_product"
    assert manifest["encoder_fingerprint"] == encoder.fingerprint()
    assert set(manifest["sha256"]) == {FAISS_FILE, DOCSTORE_FILE, ID_MAP_FILE}
    # FAISS's own format, readable by faiss itself: no pickle involved.
    index = faiss.read_index(str(flat_index / FAISS_FILE))
    assert (index.ntotal, index.d) == (24, 64)


def test_round_trip_keeps_vectors_documents_and_order(flat_index: Path, encoder: HashEncoder) -> None:
    corpus = tiny_corpus()
    loaded = load_index(flat_index, encoder)
    store = loaded.store
    assert store.index.ntotal == len(corpus)
    expected = encoder.encode([s.utterance.text for s in corpus])  # (24, 64)
    np.testing.assert_allclose(store.index.reconstruct_n(0, len(corpus)), expected, atol=1e-6)
    for row, sample in enumerate(corpus):
        doc = store.docstore.search(store.index_to_docstore_id[row])
        assert doc.page_content == sample.response.text
        assert doc.metadata == {
            "utterance": sample.utterance.text,
            "utterance_emotion": sample.utterance.emotion,
            "response": sample.response.text,
            "response_emotion": sample.response.emotion,
            "dialogue_id": sample.dialogue_id,
        }


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_approximate_indexes_build_save_load_and_find_exact_match(
    tmp_path: Path, encoder: HashEncoder, index_type: str
) -> None:
    corpus = tiny_corpus()
    build_index(encoder, corpus, tmp_path / "ix", index_type, nlist=4, nprobe=4)  # type: ignore[arg-type]
    loaded = load_index(tmp_path / "ix", encoder)
    assert loaded.manifest.index_type == index_type
    if index_type == "ivf":
        assert loaded.manifest.params == IndexParams(nlist=4, nprobe=4, hnsw_m=32, ef_search=64)
        assert faiss.extract_index_ivf(loaded.store.index).nprobe == 4
    else:
        assert isinstance(loaded.store.index, faiss.IndexHNSWFlat)
    for sample in corpus[:6]:
        [(doc, score)] = loaded.store.similarity_search_with_score(sample.utterance.text, k=1)
        assert doc.metadata["utterance"] == sample.utterance.text
        assert score == pytest.approx(1.0, abs=1e-5)


def test_query_time_overrides_for_nprobe_and_ef_search(tmp_path: Path, encoder: HashEncoder) -> None:
    build_index(encoder, tiny_corpus(), tmp_path / "ivf", "ivf", nlist=4)
    assert faiss.extract_index_ivf(load_index(tmp_path / "ivf", nprobe=3).store.index).nprobe == 3
    build_index(encoder, tiny_corpus(), tmp_path / "hnsw", "hnsw", ef_search=20)
    assert load_index(tmp_path / "hnsw").store.index.hnsw.efSearch == 20
    assert load_index(tmp_path / "hnsw", ef_search=7).store.index.hnsw.efSearch == 7


def test_ivf_with_more_lists_than_entries_is_an_input_error(tmp_path: Path, encoder: HashEncoder) -> None:
    with pytest.raises(InputError, match="nlist"):
        build_index(encoder, tiny_corpus(), tmp_path / "ix", "ivf", nlist=100)


def test_default_nlist() -> None:
    assert default_nlist(10_000) == 400
    assert default_nlist(3) == 3
    assert default_nlist(1) == 1


def test_bad_config_and_empty_corpus(tmp_path: Path, encoder: HashEncoder) -> None:
    with pytest.raises(InputError, match="unknown index type 'lsh'"):
        IndexConfig(index_type="lsh")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="nprobe"):
        IndexConfig(nprobe=0)
    with pytest.raises(InputError, match="no samples"):
        build_index(encoder, [], tmp_path / "ix")


def test_missing_folder_and_missing_files(tmp_path: Path, flat_index: Path) -> None:
    with pytest.raises(InputError, match="index folder not found"):
        load_index(tmp_path / "nope")
    for name in (FAISS_FILE, DOCSTORE_FILE, MANIFEST_FILE):
        broken = tmp_path / f"copy-{name}"
        shutil.copytree(flat_index, broken)
        (broken / name).unlink()
        with pytest.raises(InputError, match=rf"{name}.*(not found)"):
            load_index(broken)


def test_damaged_faiss_file_is_named(flat_index: Path) -> None:
    path = flat_index / FAISS_FILE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=rf"{FAISS_FILE}: damaged or replaced"):
        load_index(flat_index)


def test_unreadable_faiss_file_with_matching_checksum(flat_index: Path) -> None:
    path = flat_index / FAISS_FILE
    path.write_bytes(b"not a faiss index at all")
    manifest = json.loads((flat_index / MANIFEST_FILE).read_text())
    manifest["sha256"][FAISS_FILE] = __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    (flat_index / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(InputError, match=rf"{FAISS_FILE}: not a readable FAISS index"):
        load_index(flat_index)


def test_damaged_manifest_json_is_named(flat_index: Path) -> None:
    (flat_index / MANIFEST_FILE).write_text('{"count": 3,')
    with pytest.raises(InputError, match=rf"{MANIFEST_FILE}.*not valid UTF-8 JSON"):
        load_index(flat_index)


def test_damaged_docstore_is_named(flat_index: Path) -> None:
    (flat_index / DOCSTORE_FILE).write_text("[]")
    with pytest.raises(InputError, match=rf"{DOCSTORE_FILE}: damaged or replaced"):
        load_index(flat_index)


def _edit_manifest(index_dir: Path, **changes: object) -> None:
    manifest = json.loads((index_dir / MANIFEST_FILE).read_text())
    manifest.update(changes)
    (index_dir / MANIFEST_FILE).write_text(json.dumps(manifest))


def test_count_and_dim_disagreement_is_a_mismatch(flat_index: Path) -> None:
    _edit_manifest(flat_index, count=25)
    with pytest.raises(MismatchError, match=r"FAISS count 24 but index.json says 25"):
        load_index(flat_index)
    _edit_manifest(flat_index, count=24, dim=32)
    with pytest.raises(MismatchError, match=r"FAISS dim 64 but index.json says 32"):
        load_index(flat_index)


def test_encoder_with_other_fingerprint_is_a_mismatch(flat_index: Path) -> None:
    with pytest.raises(MismatchError, match=r"index.json: index was built with another encoder \(salt: index '' vs"):
        load_index(flat_index, HashEncoder(dim=64, salt="x"))
    with pytest.raises(MismatchError, match=r"dim: index 64 vs encoder 32"):
        load_index(flat_index, HashEncoder(dim=32))


def test_unsupported_format_version(flat_index: Path) -> None:
    _edit_manifest(flat_index, format_version=99)
    with pytest.raises(InputError, match="unsupported index format 99"):
        load_index(flat_index)


def test_encoder_folder_beside_index_is_recorded_relative_and_survives_a_move(
    tmp_path: Path, encoder: HashEncoder
) -> None:
    bundle = tmp_path / "bundle"
    (bundle / "erm").mkdir(parents=True)
    loaded = build_index(encoder, tiny_corpus(), bundle / "index", source=EncoderSource("erm", str(bundle / "erm")))
    assert loaded.manifest.encoder_source == StoredSource("erm", "../erm", relative_to_index=True)
    recorded = json.loads((bundle / "index" / MANIFEST_FILE).read_text())["encoder_source"]
    assert recorded == {"kind": "erm", "path": "../erm", "relative_to_index": True}
    moved = tmp_path / "moved"
    shutil.move(bundle, moved)
    source = resolve_source(load_index(moved / "index").manifest, moved / "index")
    assert source == EncoderSource("erm", str((moved / "erm").resolve()))


def test_far_away_folder_is_absolute_and_model_names_are_kept(tmp_path: Path, encoder: HashEncoder) -> None:
    far = tmp_path / "elsewhere" / "erm"
    far.mkdir(parents=True)
    loaded = build_index(encoder, tiny_corpus(), tmp_path / "a" / "b" / "ix", source=EncoderSource("erm", str(far)))
    assert loaded.manifest.encoder_source == StoredSource("erm", str(far.resolve()), relative_to_index=False)
    loaded = build_index(encoder, tiny_corpus(), tmp_path / "ix2", source=EncoderSource("plain", "some/hub-name"))
    assert loaded.manifest.encoder_source == StoredSource("plain", "some/hub-name", relative_to_index=False)


def test_manifest_naming_another_index_type_is_a_mismatch(flat_index: Path) -> None:
    _edit_manifest(flat_index, index_type="hnsw")
    with pytest.raises(MismatchError, match=r"index\.faiss: holds a FAISS IndexFlat.*not the inner-product hnsw index"):
        load_index(flat_index)


def test_the_committed_default_index_reads_back_to_the_same_json() -> None:
    """An index written before the typed manifest loads, and the manifest writes back exactly what it read."""
    index = default_bundle_path() / "index"
    raw = json.loads((index / MANIFEST_FILE).read_text())
    manifest = read_manifest(index)
    assert (manifest.index_type, manifest.dim, manifest.count) == ("flat", 1536, 385)
    assert manifest.params == IndexParams(nlist=None, nprobe=8, hnsw_m=32, ef_search=64)
    assert manifest.encoder_source == StoredSource("erm", "../erm", relative_to_index=True)
    assert manifest.to_dict() == raw


def test_an_index_from_before_the_score_baseline_loads_with_raw_scores(flat_index: Path) -> None:
    manifest = json.loads((flat_index / MANIFEST_FILE).read_text())
    del manifest["score_baseline"]
    (flat_index / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert load_index(flat_index).manifest.score_baseline == 0.0


def test_an_encoder_that_cannot_tell_the_corpus_apart_still_builds_an_index_that_loads(tmp_path: Path) -> None:
    """Every utterance on (almost) one point: random pairs' mean similarity rounds to 1, above what a manifest holds.
    The build records the highest baseline the scale allows, says why, and the index loads with finite scores."""
    collapsed = HashEncoder(dim=8, constant=1000.0)  # every vector (1, ..., 1) / sqrt(8) up to a tiny hashed part
    with pytest.warns(UserWarning, match=r"mean similarity of 1\.0000.*relative to 0\.999"):
        build_index(collapsed, tiny_corpus(), tmp_path / "index")
    loaded = load_index(tmp_path / "index")
    assert loaded.manifest.score_baseline == MAX_SCORE_BASELINE
    retriever = EmotionalRetriever.load(tmp_path / "index", encoder=collapsed, k=24)
    scores = [d.metadata["score"] for d in retriever.invoke(tiny_corpus()[0].utterance.text)]
    assert all(math.isfinite(s) and s <= 1.0 for s in scores)


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"dim": "64"}, "dim", "must be a positive integer, got '64'"),
        ({"count": True}, "count", "must be a positive integer, got True"),
        ({"index_type": "lsh"}, "index_type", "unknown index type 'lsh'"),
        ({"metric": "l2"}, "metric", "must be 'inner_product'"),
        ({"sha256": {FAISS_FILE: "0" * 64}}, "sha256", f"needs the SHA-256 of {DOCSTORE_FILE}"),
        ({"encoder_fingerprint": "abc"}, "encoder_fingerprint", "must be an object or null"),
        ({"score_baseline": 1.0}, "score_baseline", "must be a number in [-1, 0.999], got 1.0"),
        ({"score_baseline": 0.9991}, "score_baseline", "must be a number in [-1, 0.999], got 0.9991"),
        ({"score_baseline": -1.5}, "score_baseline", "must be a number in [-1, 0.999], got -1.5"),
        ({"params": {"nlist": None, "nprobe": 0, "hnsw_m": 32, "ef_search": 64}}, "params.nprobe", "got 0"),
        ({"params": {"nlist": 0, "nprobe": 8, "hnsw_m": 32, "ef_search": 64}}, "params.nlist", "got 0"),
        ({"params": [8]}, "params", "must be an object"),
        ({"encoder_source": {"kind": "sbert"}}, "encoder_source", "kind 'erm' or 'plain'"),
        ({"encoder_source": {"kind": "erm", "path": 7}}, "encoder_source.path", "must be a string or null, got 7"),
        ({"encoder_source": {"kind": "erm", "relative_to_index": 1}}, "encoder_source.relative_to_index", "true or"),
        ({"format_version": 2}, "format_version", "unsupported index format 2"),
        ({"encoder": "x"}, "encoder", "unknown field"),
        ({"count": None}, "count", "must be a positive integer, got None"),
    ],
)
def test_a_bad_manifest_field_is_an_input_error_naming_file_and_field(
    flat_index: Path, changes: dict, field: str, problem: str
) -> None:
    _edit_manifest(flat_index, **changes)
    with pytest.raises(InputError) as error:
        load_index(flat_index)
    assert error.value.file == str(flat_index / MANIFEST_FILE) and error.value.field == field
    assert problem in error.value.problem


def test_a_missing_manifest_field_is_named(flat_index: Path) -> None:
    manifest = json.loads((flat_index / MANIFEST_FILE).read_text())
    del manifest["params"]
    with pytest.raises(InputError, match=r"index\.json: field 'params': missing"):
        IndexManifest.from_dict(manifest, flat_index / MANIFEST_FILE)


def test_topic_similarities_are_cosines_of_the_query_and_each_utterance(flat_index: Path, encoder: HashEncoder) -> None:
    retriever = EmotionalRetriever.load(flat_index, encoder=encoder)
    query, utterances = "happy words d0", ["happy words d1", "sad words", "happy words d0"]
    vectors = encoder.encode([query, *utterances])  # HashEncoder has no embed_sentences: its retrieval vectors
    expected = [float(vectors[i] @ vectors[0]) for i in (1, 2, 3)]
    assert retriever.topic_similarities(query, utterances) == pytest.approx(expected, abs=1e-6)
    assert expected[2] == pytest.approx(1.0) and expected[0] > expected[1]


def test_the_default_erm_sentence_embeddings_tell_topics_apart() -> None:
    from elmd_sdk.retrievers.encoder import ERMEncoder

    erm = ERMEncoder.load(default_bundle_path() / "erm")
    texts = ["My dog ran away this morning.", "My dog passed away this morning. He was fourteen.",
             "The form is picky about the address."]  # fmt: skip
    vectors = erm.embed_sentences(texts)
    assert vectors.shape == (3, 384) and np.linalg.norm(vectors, axis=1) == pytest.approx(np.ones(3), abs=1e-5)
    same_topic, other_topic = float(vectors[1] @ vectors[0]), float(vectors[2] @ vectors[0])
    assert same_topic > 0.5 > 0.2 > other_topic
    retrieval = erm.encode(texts)  # emotion-trained: every pair near 1
    assert float(retrieval[2] @ retrieval[0]) > 0.9
