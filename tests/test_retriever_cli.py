"""``elmd-sdk index build`` with the real offline MiniLM: ERM and plain-encoder indexes, reloaded from the manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from retriever_fakes import tiny_corpus
from typer.testing import CliRunner

from elmd_sdk.cli.main import app
from elmd_sdk.data import write_jsonl
from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.retrievers import EmotionalRetriever, ERMEncoder
from elmd_sdk.retrievers.encoder import ERMConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "corpus.jsonl"
    write_jsonl(path, tiny_corpus())
    return path


def test_build_with_erm_then_move_the_bundle_and_load_from_the_manifest(tmp_path: Path, corpus_file: Path) -> None:
    bundle = tmp_path / "bundle"
    erm = ERMEncoder.create(ERMConfig(s=2))  # untrained, but a complete ERM folder
    erm.save(bundle / "erm")
    result = CliRunner().invoke(
        app,
        ["index", "build", "--erm", str(bundle / "erm"), "--data", str(corpus_file), "--out", str(bundle / "index")],
    )
    assert result.exit_code == 0, result.output
    assert "wrote flat index of 24 entries (dim 768)" in result.output
    moved = tmp_path / "moved"
    shutil.move(bundle, moved)
    retriever = EmotionalRetriever.load(moved / "index", k=2)
    target = tiny_corpus()[7]
    docs = retriever.invoke(target.utterance.text)
    assert docs[0].page_content == target.response.text
    # A float32 cosine of a 768-dim vector with itself is 1 within 2e-6; the relative score divides it by 1 - baseline.
    assert docs[0].metadata["similarity"] == pytest.approx(1.0, abs=2e-6)
    assert docs[0].metadata["score"] == pytest.approx(1.0, abs=2e-6 / (1 - retriever.score_baseline))
    with pytest.raises(MismatchError, match="weights_sha256"):
        EmotionalRetriever.load(moved / "index", encoder=ERMEncoder.create(ERMConfig(s=2)))


def test_plain_encoder_index_with_hnsw(tmp_path: Path, corpus_file: Path) -> None:
    out = tmp_path / "plain"
    args = ["index", "build", "--encoder", "default", "--data", str(corpus_file), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--index-type", "hnsw"])
    assert result.exit_code == 0, result.output
    assert "wrote hnsw index of 24 entries (dim 384)" in result.output
    retriever = EmotionalRetriever.load(out)
    target = tiny_corpus()[3]
    [doc] = retriever.invoke(target.utterance.text)
    assert doc.metadata["utterance"] == target.utterance.text


def test_exactly_one_encoder_option(tmp_path: Path, corpus_file: Path) -> None:
    base = ["index", "build", "--data", str(corpus_file), "--out", str(tmp_path / "ix")]
    for extra in ([], ["--erm", str(tmp_path), "--encoder", "default"]):
        result = CliRunner().invoke(app, base + extra)
        assert isinstance(result.exception, InputError)
        assert "exactly one of --erm DIR" in str(result.exception)
