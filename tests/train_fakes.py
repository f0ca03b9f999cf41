"""Test helpers for the REP/EERG trainer tests: a colour visual encoder, coloured videos and samples (the tiny
tokenizer and LLM come from ``llm_fakes``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import llm_fakes
import numpy as np
import torch
from llm_fakes import tiny_tokenizer

from elmd_sdk.data.records import Sample, Turn, VideoRef
from elmd_sdk.video.encoders import VisualEncoder

__all__ = ["COLOURS", "ColourEncoder", "colour_samples", "save_tiny_llm", "text_samples", "tiny_tokenizer",
           "write_colour_video"]  # fmt: skip

# Three emotions told apart by colour only (RGB of the whole frame).
COLOURS: dict[str, tuple[int, int, int]] = {"happy": (230, 40, 40), "sad": (40, 40, 230), "anger": (40, 230, 40)}


def save_tiny_llm(folder: Path, seed: int = 0, layers: int = 2) -> Path:
    """The tiny LLM of ``llm_fakes`` with weights drawn with std 0.2 (logits sharp enough to learn from quickly)."""
    return llm_fakes.save_tiny_llm(folder, seed, layers, initializer_range=0.2)


class ColourEncoder(VisualEncoder):
    """Stand-in frozen encoder: X (m, o=2, q=4) from each frame's mean colour and its top half's mean colour."""

    o = 2
    q = 4

    def __init__(self, salt: str = "") -> None:
        self.salt = salt
        self.calls = 0

    def _encode_batch(self, frames: np.ndarray) -> torch.Tensor:
        self.calls += 1
        pixels = torch.as_tensor(frames, dtype=torch.float32) / 255.0  # (b, H, W, 3)
        whole = pixels.mean(dim=(1, 2))  # (b, 3)
        top = pixels[:, : pixels.shape[1] // 2].mean(dim=(1, 2))  # (b, 3)
        ones = torch.ones(len(frames), 1)
        return torch.stack([torch.cat([whole, ones], -1), torch.cat([top, ones], -1)], dim=1)  # (b, 2, 4)

    def fingerprint(self) -> dict[str, Any]:
        return {"backend": "test-colour", "o": self.o, "q": self.q, "salt": self.salt}


def write_colour_video(path: Path, rgb: tuple[int, int, int], seconds: float = 3.0, fps: int = 10) -> Path:
    """A small h264 clip of one solid colour."""
    from moviepy import VideoClip

    frame = np.broadcast_to(np.array(rgb, dtype=np.uint8), (32, 32, 3)).copy()
    clip = VideoClip(lambda t: frame, duration=seconds)
    clip.with_fps(fps).write_videofile(str(path), codec="libx264", audio=False, logger=None)
    return path


def colour_samples(videos: dict[str, Path], per_label: int, prefix: str) -> list[Sample]:
    """Samples whose text is identical across emotions: only the clip's colour tells the response emotion."""
    samples = []
    for i in range(per_label):
        for label, path in videos.items():
            start = float(i % 3)
            samples.append(
                Sample(
                    dialogue_id=f"{prefix}{label}{i}",
                    utterance=Turn("A", "What do you think of this?", "neutral"),
                    response=Turn("B", "I see.", label),
                    video=VideoRef(str(path), start, start + 1.0),
                )
            )
    return samples


def text_samples(n: int, labels: tuple[str, ...] = ("happy", "sad", "anger")) -> list[Sample]:
    """Samples whose utterance and response name their emotion (learnable from text), with a history turn."""
    samples = []
    for i in range(n):
        label = labels[i % len(labels)]
        samples.append(
            Sample(
                dialogue_id=f"d{i}",
                utterance=Turn("A", f"I feel {label} today {i}", label),
                response=Turn("B", f"That is {label} news", label),
                history=[Turn("B", f"hello {i}", None)],
                background="two friends talk",
            )
        )
    return samples
