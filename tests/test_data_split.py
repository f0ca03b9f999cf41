"""Dialogue-level split: deterministic for a seed, no dialogue in two splits, sizes follow the ratios."""

from __future__ import annotations

import random

import pytest

from elmd_sdk.data import Sample, Turn, parse_ratios, split_samples
from elmd_sdk.errors import InputError


def corpus(dialogues: int = 200, seed: int = 1) -> list[Sample]:
    rng = random.Random(seed)
    return [
        Sample(f"d{d}", Turn("A", f"{d}-{i}", "sad"), Turn("B", "r", "happy"))
        for d in range(dialogues)
        for i in range(rng.randint(1, 9))
    ]


def test_split_by_dialogue_follows_ratios() -> None:
    samples = corpus()
    parts = split_samples(samples)
    assert list(parts) == ["train", "valid", "test"]
    ids = {name: {s.dialogue_id for s in part} for name, part in parts.items()}
    assert not ids["train"] & ids["valid"] and not ids["train"] & ids["test"] and not ids["valid"] & ids["test"]
    assert sorted(s.utterance.text for p in parts.values() for s in p) == sorted(s.utterance.text for s in samples)
    for name, share in (("train", 0.8), ("valid", 0.1), ("test", 0.1)):
        assert abs(len(parts[name]) / len(samples) - share) < 0.03
    order = {s.utterance.text: i for i, s in enumerate(samples)}
    assert all(
        [order[s.utterance.text] for s in p] == sorted(order[s.utterance.text] for s in p) for p in parts.values()
    )


def test_split_is_deterministic_and_order_independent() -> None:
    samples = corpus()
    first = split_samples(samples, seed=3)
    shuffled = list(samples)
    random.Random(0).shuffle(shuffled)
    again = split_samples(shuffled, seed=3)
    assert {k: {s.dialogue_id for s in v} for k, v in first.items()} == {
        k: {s.dialogue_id for s in v} for k, v in again.items()
    }
    assert split_samples(samples, seed=3) == first
    assert {s.dialogue_id for s in split_samples(samples, seed=4)["test"]} != {s.dialogue_id for s in first["test"]}


def test_zero_ratio_leaves_a_split_empty() -> None:
    parts = split_samples(corpus(50), ratios=(1, 0, 1))
    assert parts["valid"] == [] and parts["train"] and parts["test"]


def test_degenerate_splits_are_refused() -> None:
    with pytest.raises(InputError, match="no samples to split"):
        split_samples([])
    two_dialogues = corpus(2)
    with pytest.raises(InputError, match="2 dialogue\\(s\\) cannot fill 3 splits") as err:
        split_samples(two_dialogues)
    assert err.value.field == "--ratios"
    assert split_samples(two_dialogues, ratios=(1, 0, 1))["valid"] == []
    for text in ("inf:1:1", "1e309:1:1", "0:0:0", "nan:1:1", "-1:1:1"):
        with pytest.raises(InputError, match="finite, non-negative"):
            parse_ratios(text)


def test_parse_ratios() -> None:
    assert parse_ratios("8:1:1") == (8.0, 1.0, 1.0)
    assert parse_ratios("0.7:0.2:0.1") == (0.7, 0.2, 0.1)
    for bad in ("8:1", "8:1:x", "8:-1:1", "0:0:0"):
        with pytest.raises(InputError, match="field '--ratios'"):
            parse_ratios(bad)
