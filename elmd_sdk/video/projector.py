"""The video projector (paper Eq. 9): a Linear layer from pooled visual features into the LLM's embedding space.

Saved as ``projector.safetensors`` plus ``projector.json``, which records q, the LLM hidden size, the fingerprints of
the visual encoder and the LLM it was trained for, and the weights' sha256 (so a torn pair of files is detected).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.io import atomic_write_json, is_json_int, load_tensors, read_json, save_tensors, sha256_file

CONFIG_FILE = "projector.json"
WEIGHTS_FILE = "projector.safetensors"
FORMAT = "elmd-video-projector"
FORMAT_VERSION = 1


@dataclass
class ProjectorConfig:
    """Shape of the projector and identity of what it was trained with (encoder and LLM fingerprints)."""

    q: int
    hidden_size: int
    encoder: dict[str, Any] = field(default_factory=dict)
    llm: dict[str, Any] = field(default_factory=dict)


class VideoProjector(nn.Module):
    """Eq. 9, E_v = Linear(V_c): ``(..., m + o, q)`` pooled features -> ``(..., m + o, hidden_size)`` video tokens."""

    def __init__(self, config: ProjectorConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(config.q, config.hidden_size)

    def forward(self, v_c: torch.Tensor) -> torch.Tensor:  # (..., m + o, q) -> (..., m + o, hidden_size)
        return self.linear(v_c)

    def save(self, path: str | Path) -> None:
        """Write ``projector.safetensors`` then ``projector.json`` into the folder ``path``, each file atomically."""
        path = Path(path)
        weights = path / WEIGHTS_FILE
        save_tensors(weights, dict(self.state_dict()))
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "q": self.config.q,
            "hidden_size": self.config.hidden_size,
            "encoder": self.config.encoder,
            "llm": self.config.llm,
            "weights_sha256": sha256_file(weights),
        }
        atomic_write_json(path / CONFIG_FILE, meta)

    @classmethod
    def load(
        cls, path: str | Path, *, encoder: dict[str, Any] | None = None, llm: dict[str, Any] | None = None
    ) -> VideoProjector:
        """Load a saved projector, checking it against the fingerprints of the encoder and LLM it will run with.

        Raises :class:`MismatchError` naming the fields that differ when it was trained for another encoder, LLM,
        q or hidden size, and :class:`InputError` for missing or damaged files.
        """
        path = Path(path)
        config_file, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
        config, weights_sha256 = _read_config(config_file)
        if encoder is not None:
            _compare(path, "encoder", config.encoder, encoder)
            _compare(path, "q", config.q, encoder.get("q", config.q))
        if llm is not None:
            _compare(path, "llm", _identity(config.llm), _identity(llm))
            _compare(path, "hidden_size", config.hidden_size, llm.get("hidden_size", config.hidden_size))
        if not weights.is_file():
            raise InputError("file not found", file=weights)
        if sha256_file(weights) != weights_sha256:
            raise InputError(f"does not match the weights_sha256 recorded in {CONFIG_FILE}", file=weights)
        projector = cls(config)
        tensors = load_tensors(weights)
        expected = {name: tuple(t.shape) for name, t in projector.state_dict().items()}
        if {name: tuple(t.shape) for name, t in tensors.items()} != expected:
            raise InputError(f"tensors do not fit a Linear({config.q}, {config.hidden_size})", file=weights)
        projector.load_state_dict(tensors)
        return projector


def _read_config(config_file: Path) -> tuple[ProjectorConfig, str]:
    """Parse and check ``projector.json``: the config and the sha256 of the weights saved with it."""
    meta = read_json(config_file)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"not an elmd-sdk video projector config (format must be '{FORMAT}')", file=config_file)
    for name in ("q", "hidden_size"):
        if not is_json_int(meta.get(name)) or meta[name] < 1:
            raise InputError("must be a positive integer", file=config_file, field=name)
    for name in ("encoder", "llm"):
        if not isinstance(meta.get(name), dict):
            raise InputError("must be an object (a fingerprint)", file=config_file, field=name)
    if not isinstance(meta.get("weights_sha256"), str):
        raise InputError("must be a sha256 hex string", file=config_file, field="weights_sha256")
    config = ProjectorConfig(q=meta["q"], hidden_size=meta["hidden_size"], encoder=meta["encoder"], llm=meta["llm"])
    return config, meta["weights_sha256"]


LOCATION_KEYS = frozenset({"name_or_path"})  # where a model was loaded from: not part of what it is


def _identity(fingerprint: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint without its location, so the same model loaded from another path still matches."""
    return {k: v for k, v in fingerprint.items() if k not in LOCATION_KEYS}


def _compare(path: Path, what: str, saved: Any, expected: Any) -> None:
    """Raise MismatchError naming every differing field when a saved value or fingerprint is not the expected one."""
    if isinstance(saved, dict) and isinstance(expected, dict):
        fields = sorted(k for k in saved.keys() | expected.keys() if saved.get(k) != expected.get(k))
        if fields:
            diffs = "; ".join(f"{what}.{k}: saved {saved.get(k)!r}, expected {expected.get(k)!r}" for k in fields)
            raise MismatchError(f"{path}: projector was trained for another {what} ({diffs})")
    elif saved != expected:
        raise MismatchError(f"{path}: projector has {what}={saved!r}, expected {what}={expected!r}")
