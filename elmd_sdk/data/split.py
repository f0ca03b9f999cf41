"""Deterministic, seeded train/valid/test split by dialogue: no dialogue lands in two splits."""

from __future__ import annotations

import bisect
import random
from collections.abc import Mapping, Sequence
from pathlib import Path

from elmd_sdk.data.jsonl import write_jsonl
from elmd_sdk.data.records import Sample
from elmd_sdk.errors import InputError
from elmd_sdk.io import atomic_folder, atomic_write_json

SPLITS: tuple[str, ...] = ("train", "valid", "test")
MANIFEST_FILE = "split.json"  # marks a folder of splits: the ratios, the seed and each split's sample count


def parse_ratios(text: str) -> tuple[float, float, float]:
    """Parse ``"8:1:1"`` into three non-negative weights with a positive sum."""
    parts = text.split(":")
    try:
        ratios = tuple(float(p) for p in parts)
    except ValueError:
        ratios = ()
    if len(ratios) != 3 or any(not 0 <= r < float("inf") for r in ratios) or sum(ratios) <= 0:
        raise InputError(f"expected three finite, non-negative numbers like 8:1:1, found {text!r}", field="--ratios")
    return ratios[0], ratios[1], ratios[2]


def split_samples(
    samples: Sequence[Sample], ratios: Sequence[float] = (8, 1, 1), seed: int = 0
) -> dict[str, list[Sample]]:
    """Split samples into ``train``/``valid``/``test`` by dialogue, in proportion to ``ratios`` by sample count.

    Dialogue ids are sorted, shuffled with ``random.Random(seed)``, then laid end to end; a dialogue goes
    to the split whose share of the sample total holds the middle of its samples. The result depends only
    on the set of samples and the seed, never on input order; samples keep their input order in each split.
    """
    if len(ratios) != 3 or any(not 0 <= r < float("inf") for r in ratios) or sum(ratios) <= 0:
        raise ValueError(f"ratios must be three finite, non-negative numbers with a positive sum, got {ratios}")
    if not samples:
        raise InputError("no samples to split", field="IN")
    sizes: dict[str, int] = {}
    for sample in samples:
        sizes[sample.dialogue_id] = sizes.get(sample.dialogue_id, 0) + 1
    wanted = sum(r > 0 for r in ratios)
    if len(sizes) < wanted:
        raise InputError(
            f"{len(sizes)} dialogue(s) cannot fill {wanted} splits (a dialogue is never divided); use fewer "
            "non-zero ratios or more data",
            field="--ratios",
        )
    order = sorted(sizes)
    random.Random(seed).shuffle(order)
    total, bounds = len(samples), [sum(ratios[: i + 1]) / sum(ratios) for i in range(3)]
    assigned: dict[str, str] = {}
    done = 0
    for dialogue_id in order:
        middle = (done + sizes[dialogue_id] / 2) / total
        assigned[dialogue_id] = SPLITS[min(bisect.bisect_right(bounds, middle), len(SPLITS) - 1)]
        done += sizes[dialogue_id]
    result: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    for sample in samples:
        result[assigned[sample.dialogue_id]].append(sample)
    return result


def write_splits(out: str | Path, splits: Mapping[str, Sequence[Sample]], ratios: Sequence[float], seed: int) -> None:
    """Write each split as ``NAME.jsonl`` and then ``split.json`` into a new folder that replaces ``out`` as a whole
    (:func:`elmd_sdk.io.atomic_folder`)."""
    with atomic_folder(out) as folder:
        for name, samples in splits.items():
            write_jsonl(folder / f"{name}.jsonl", samples)
        counts = {name: len(samples) for name, samples in splits.items()}
        atomic_write_json(folder / MANIFEST_FILE, {"ratios": list(ratios), "seed": seed, "samples": counts})
