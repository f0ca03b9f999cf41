"""The split's dialogue-assignment rule on a case worked out by hand: dialogue ids sorted, shuffled with
``random.Random(seed)``, laid end to end, and each dialogue sent to the split whose share holds its middle sample."""

from __future__ import annotations

import random

from elmd_sdk.data import Sample, Turn, split_samples


def _dialogues(sizes: dict[str, int]) -> list[Sample]:
    return [
        Sample(dialogue_id, Turn("A", f"{dialogue_id}{i}", "sad"), Turn("B", "r", "happy"))
        for dialogue_id, size in sizes.items()
        for i in range(size)
    ]


def test_each_dialogue_goes_where_its_middle_sample_falls() -> None:
    order = ["a", "b", "c", "d"]
    random.Random(0).shuffle(order)
    assert order == ["c", "a", "b", "d"]  # the order the dialogues are laid out in, for seed 0
    # Laid end to end (8 samples): c [0, 1), a [1, 3), b [3, 4), d [4, 8). Ratios 1:1:2 put the split bounds at
    # samples 2 and 4. Middles: c 0.5 -> train; a 2.0, on the bound, -> valid (a bound belongs to the next split);
    # b 3.5 -> valid; d 6.0 -> test. (By first sample: a would be train; by last: b test; by dialogue count: a, b, d
    # at dialogue middles 1.5, 2.5, 3.5 of 4 -> valid, test, test.)
    samples = _dialogues({"d": 4, "c": 1, "b": 1, "a": 2})
    parts = split_samples(samples, ratios=(1, 1, 2), seed=0)
    assert {name: sorted({s.dialogue_id for s in part}) for name, part in parts.items()} == {
        "train": ["c"],
        "valid": ["a", "b"],
        "test": ["d"],
    }
    assert [s.utterance.text for s in parts["valid"]] == ["b0", "a0", "a1"]  # input order kept within a split
