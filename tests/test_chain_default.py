"""The embedded default bundle on the real SmolLM2 and MiniLM: it loads, retrieves, and batch/stream match invoke."""

from __future__ import annotations

import json
import math

import pytest

from elmd_sdk.bundle import load_bundle
from elmd_sdk.chains import ELMDChain, ELMDResult, default_bundle_path
from elmd_sdk.data import EMOTIONS, read_jsonl

pytestmark = pytest.mark.slow

INPUTS = [
    {"utterance": "I finally got the job offer from the bakery downtown!"},
    {"utterance": "Someone scratched my car in the parking lot and just drove off.", "background": "A busy street."},
    {"utterance": "Guess what, my sister is getting married next month.", "history": ["Hi!", "Hey, what's new?"]},
]


@pytest.fixture(scope="module")
def chain(elmd_home: str) -> ELMDChain:
    return ELMDChain.default(max_new_tokens=20, do_sample=False)


def test_committed_bundle_indexes_the_committed_corpus() -> None:
    manifest, paths = load_bundle(default_bundle_path())
    assert paths.erm is not None and paths.index is not None
    corpus = read_jsonl(default_bundle_path().parent / "default_corpus.jsonl")
    documents = json.loads((paths.index / "docstore.json").read_text())["documents"]
    indexed = [(d["metadata"]["utterance"], d["page_content"], d["metadata"]["utterance_emotion"]) for d in documents]
    assert indexed == [(s.utterance.text, s.response.text, s.utterance.emotion) for s in corpus], (
        "the default bundle is stale: rebuild it with python -m elmd_sdk.trainers.default_bundle (see the README)"
    )
    assert manifest.training_data_sha256 is not None  # the corpus and the ERM's MELD train (not in the repository)
    assert manifest.labels == list(EMOTIONS) and manifest.language == "en"
    assert manifest.projector_dir is None and manifest.prefix_dir is None  # nothing untrained is shipped


def test_default_chain_loads_with_retrieval_and_without_video(chain: ELMDChain) -> None:
    assert chain.manifest is not None and chain.manifest.name == "default"
    assert chain.retriever is not None and not chain.video_enabled
    assert chain.labels == EMOTIONS


def test_demonstration_comes_from_the_corpus(chain: ELMDChain) -> None:
    responses = {s.response.text for s in read_jsonl(default_bundle_path().parent / "default_corpus.jsonl")}
    result = chain.invoke(INPUTS[0])
    assert isinstance(result, ELMDResult)
    assert result.demonstration is not None and result.demonstration.page_content in responses
    assert result.demonstration.metadata["response_emotion"] in EMOTIONS
    scores = result.emotion_scores or {}
    assert set(scores) == set(EMOTIONS) and sum(scores.values()) == pytest.approx(1.0)
    fusion = chain.emotion_fusion  # the default's fused emotion: greedy takes the best label under its decision rule
    assert chain.emotion_source == "fused" and fusion is not None
    decided = {label: math.log(p) + fusion.decision[label] for label, p in scores.items()}
    assert result.emotion == max(decided, key=decided.__getitem__)


def test_batch_equals_separate_invokes_with_greedy_decoding(chain: ELMDChain) -> None:
    assert chain.batch(INPUTS) == [chain.invoke(x) for x in INPUTS]


def test_stream_adds_up_to_invoke(chain: ELMDChain) -> None:
    chunks = list(chain.stream(INPUTS[1]))
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total == chain.invoke(INPUTS[1])
