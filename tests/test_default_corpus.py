"""The embedded English demonstration corpus: valid native JSONL, large enough and balanced over the seven emotions."""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources
from pathlib import Path

import pytest

from elmd_sdk.data.jsonl import read_jsonl
from elmd_sdk.data.labels import EMOTIONS
from elmd_sdk.data.records import Sample


def _corpus_path() -> Path:
    return Path(str(resources.files("elmd_sdk.chains") / "default_corpus.jsonl"))


@pytest.fixture(scope="module")
def samples() -> list[Sample]:
    return read_jsonl(_corpus_path())


def test_every_line_is_exactly_the_native_schema(samples: list[Sample]) -> None:
    lines = _corpus_path().read_text(encoding="utf-8").splitlines()
    assert all(line.strip() for line in lines), "blank line in the corpus"
    assert len(lines) == len(samples)
    for line, sample in zip(lines, samples, strict=True):
        assert sample.to_dict() == json.loads(line)


def test_size_and_balance(samples: list[Sample]) -> None:
    assert len(samples) >= 350
    per_utterance = Counter(s.utterance.emotion for s in samples)
    assert set(per_utterance) == set(EMOTIONS)
    assert min(per_utterance.values()) >= 45
    assert {s.response.emotion for s in samples} == set(EMOTIONS)


def test_labels_speakers_and_text(samples: list[Sample]) -> None:
    for s in samples:
        assert s.utterance.speaker == "user" and s.response.speaker == "assistant"
        assert s.utterance.text.strip() and s.response.text.strip()
        assert s.background is None and s.video is None
        assert len(s.history) <= 2
        for turn in [s.utterance, s.response, *s.history]:
            assert turn.emotion in EMOTIONS
            assert turn.speaker in {"user", "assistant"}


def test_ids_and_utterances_are_unique(samples: list[Sample]) -> None:
    ids = [s.dialogue_id for s in samples]
    assert len(set(ids)) == len(ids)
    assert all(i.startswith("default-") for i in ids)
    utterances = [s.utterance.text.strip().lower() for s in samples]
    assert len(set(utterances)) == len(utterances)


def test_response_emotions_are_not_a_copy_of_the_utterance_emotion(samples: list[Sample]) -> None:
    same = sum(s.utterance.emotion == s.response.emotion for s in samples)
    assert same < 0.7 * len(samples)
