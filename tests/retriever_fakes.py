"""Test helpers for the retriever tests: a fast deterministic encoder and a tiny corpus."""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from elmd_sdk.data.records import Sample, Turn


class HashEncoder:
    """Bag-of-words hashing encoder: each lower-cased word adds 1 to bucket crc32(word) % dim; rows unit norm.
    ``constant`` is added to every bucket first: a large one puts every utterance on almost the same point."""

    def __init__(self, dim: int = 64, salt: str = "", constant: float = 0.0) -> None:
        self._dim = dim
        self.salt = salt
        self.constant = constant
        self.calls = 0

    @property
    def dim(self) -> int:
        return self._dim

    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        self.calls += 1
        out = np.full((len(texts), self._dim), self.constant, dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, zlib.crc32((self.salt + word).encode()) % self._dim] += 1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1.0, norms)

    def fingerprint(self) -> dict[str, Any]:
        return {"format": "hash", "dim": self._dim, "salt": self.salt, "constant": self.constant}


EMOTIONS = ("happy", "sad", "anger", "neutral")


def tiny_corpus(n_dialogues: int = 6, turns: int = 4) -> list[Sample]:
    """n_dialogues * turns samples whose utterances share words with their emotion, so retrieval is checkable."""
    samples = []
    for d in range(n_dialogues):
        for t in range(turns):
            emotion = EMOTIONS[(d + t) % len(EMOTIONS)]
            samples.append(
                Sample(
                    dialogue_id=f"dia{d}",
                    utterance=Turn("A", f"{emotion} words d{d} t{t}", emotion),
                    response=Turn("B", f"reply to {emotion} d{d} t{t}", EMOTIONS[t % len(EMOTIONS)]),
                )
            )
    return samples
