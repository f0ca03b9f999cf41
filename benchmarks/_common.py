"""Set-up the MELD benchmarks share: offline Hugging Face, a parser with ``--data-root``, and reading MELD splits.

Importing it sets ``HF_HUB_OFFLINE`` and ``TOKENIZERS_PARALLELISM`` (unless already set), so a script imports it
before anything that loads a model. The scripts run as ``python benchmarks/<name>.py``, which puts this folder on
``sys.path``.
"""

from __future__ import annotations

import argparse
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from elmd_sdk.data import Sample

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

MELD_FILES = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv"}  # the test split is never read


def meld_parser(description: str | None) -> argparse.ArgumentParser:
    """A parser showing ``description`` as written, with ``--data-root`` (default: ``../shared/data``)."""
    repo = Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=repo.parent / "shared" / "data", help="folder holding meld/")
    return p


def meld_csv(data_root: Path, split: str) -> Path:
    """The CSV file of MELD ``split`` ("train" or "dev") under ``data_root``."""
    return data_root / "meld" / MELD_FILES[split]


def read_meld(data_root: Path, split: str, **options: Any) -> list[Sample]:
    """The samples of MELD ``split`` (``options``: more ``prepare_corpus`` settings, such as ``max_history``)."""
    from elmd_sdk.data import prepare_corpus

    return prepare_corpus("meld", meld_csv(data_root, split), **options).samples


def dev_subset(samples: list[Sample], n: int, seed: int) -> list[Sample]:
    """``n`` samples drawn with ``seed``, in their file order (all of them when there are no more than ``n``)."""
    if n >= len(samples):
        return samples
    chosen = sorted(random.Random(seed).sample(range(len(samples)), n))
    return [samples[i] for i in chosen]


def training_seconds(lines: list[dict[str, Any]], batch: int) -> tuple[int, float]:
    """(optimizer steps, seconds of the steps themselves) logged by the training lines of a ``metrics.jsonl``
    (records of ``read_metrics``): each line covers the steps since the previous one at its ``samples_per_s``."""
    train = [m for m in lines if m["kind"] == "train"]
    steps = [m["step"] - previous for m, previous in zip(train, [0] + [m["step"] for m in train], strict=False)]
    return sum(steps), sum(n * batch / m["samples_per_s"] for n, m in zip(steps, train, strict=True))


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation), NaN without values."""
    values = sorted(v for v in values if v == v)
    if not values:
        return float("nan")
    pos = (len(values) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (pos - low)
