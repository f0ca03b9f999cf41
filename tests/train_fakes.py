"""Test helpers for the REP/EERG trainer tests: a tiny tokenizer and Llama, a colour visual encoder, coloured videos."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import numpy as np
import torch
from elmd_sdk.chains.prompt import ENGLISH, build_prompt, prompt_variables
from llm_fakes import chatml_tokenizer, save_llm, tiny_llama
from transformers import PreTrainedTokenizerFast

from elmd_sdk.data.labels import EMOTIONS
from elmd_sdk.data.records import Sample, Turn, VideoRef
from elmd_sdk.video.encoders import VisualEncoder

# Three emotions told apart by colour only (RGB of the whole frame).
COLOURS: dict[str, tuple[int, int, int]] = {"happy": (230, 40, 40), "sad": (40, 40, 230), "anger": (40, 230, 40)}


# Fixed prompt text that the tiny tokenizer holds as single tokens, so the tiny model sees short sequences.
PHRASES = (
    "Reference reply: in a similar situation, someone replied",
    "Use it as a hint for the emotion and tone of your reply; do not copy it.",
    "Current utterance",
    "Dialogue history:",
    "Background:",
    "Video of",
    "'s scene:",
)
LABEL_SETS = (EMOTIONS, ("happy", "sad", "anger"))


def system_text(labels: tuple[str, ...]) -> str:
    """The rendered instruction I (the system message) of the English prompt for ``labels``."""
    variables = prompt_variables(Turn("A", "x"))
    return str(build_prompt("en", labels).invoke(variables).to_messages()[0].content)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE trained in memory, with the instruction and fixed prompt phrases as single tokens."""
    answers = [f"Emotion: {label}\nResponse: I see." for label in EMOTIONS] * 10  # labels become single tokens
    corpus = [string.printable, ENGLISH.instruction, ENGLISH.human, *answers]
    tokenizer = chatml_tokenizer(corpus * 5, 400)
    tokenizer.add_tokens([*(system_text(labels) for labels in LABEL_SETS), *PHRASES])
    return tokenizer


def save_tiny_llm(folder: Path, seed: int = 0, layers: int = 2) -> Path:
    """A random 2-layer Llama (hidden 32, 2 key/value heads) and its tokenizer saved as a checkpoint folder."""
    tokenizer = tiny_tokenizer()
    model = tiny_llama(tokenizer, seed, num_hidden_layers=layers, max_position_embeddings=1024, initializer_range=0.2)
    return save_llm(folder, model, tokenizer)


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
