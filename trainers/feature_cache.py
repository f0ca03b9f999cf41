"""On-disk cache of frozen visual features X (Eq. 5), so REP and EERG decode and encode every clip only once.

The visual encoder never trains, so X of shape ``(m, o, q)`` depends only on the clip and the encoder. Each clip's X
is one safetensors file ``ROOT/ab/<key>.safetensors`` where ``key`` hashes the video file's resolved path, size and
modification time (every image's, for a folder of frames), the ``[start, end]`` range, the frame count m and the
encoder's fingerprint. Files are written atomically, so concurrent ranks and killed runs never leave half a file;
editing a video or changing the encoder gives new keys rather than stale features.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from elmd_sdk.data.records import VideoRef
from elmd_sdk.errors import InputError
from elmd_sdk.io import load_tensors, save_tensors
from elmd_sdk.paths import cache_dir
from elmd_sdk.progress import make_progress
from elmd_sdk.video import VisualEncoder
from elmd_sdk.video.tokens import clip_features

FEATURES_DIR = "features"
TENSOR_NAME = "x"


def default_feature_dir() -> Path:
    """Where features are cached unless a folder is given: ``cache_dir()/features``."""
    return cache_dir() / FEATURES_DIR


def _file_identity(path: Path) -> dict[str, Any]:
    """Resolved path, size and mtime of a video file, or of every file in a folder of frames."""
    if not path.exists():
        raise InputError("video file not found", file=path)
    resolved = path.resolve()
    if resolved.is_dir():
        files = sorted(p for p in resolved.iterdir() if p.is_file())
        return {"path": str(resolved), "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}
    stat = resolved.stat()
    return {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def feature_key(video: VideoRef, frames: int, encoder_fingerprint: dict[str, Any]) -> str:
    """SHA-256 naming the X of ``video`` sampled to ``frames`` frames and encoded by the fingerprinted encoder."""
    identity = {
        "video": _file_identity(Path(video.path)),
        "start": video.start,
        "end": video.end,
        "frames": frames,
        "encoder": encoder_fingerprint,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class FeatureCache:
    """X per clip for one frozen encoder and frame count: computed on first request, read from disk afterwards."""

    def __init__(self, encoder: VisualEncoder, frames: int = 8, root: str | Path | None = None) -> None:
        if frames < 1:
            raise InputError(f"must be a positive integer, got {frames}", field="frames")
        self.encoder = encoder
        self.frames = frames
        self.root = Path(root) if root is not None else default_feature_dir()
        self.fingerprint = encoder.fingerprint()
        self._keys: dict[VideoRef, str] = {}
        _ensure_writable(self.root)

    def path(self, video: VideoRef) -> Path:
        """The cache file of ``video`` (present or not)."""
        key = self._keys.get(video)
        if key is None:
            key = self._keys[video] = feature_key(video, self.frames, self.fingerprint)
        return self.root / key[:2] / f"{key}.safetensors"

    def contains(self, video: VideoRef) -> bool:
        """Whether X of ``video`` is already on disk."""
        return self.path(video).is_file()

    def compute(self, video: VideoRef) -> torch.Tensor:
        """Decode ``video``, encode it (Eq. 5) and store X atomically; returns X ``(m, o, q)``."""
        x = clip_features(self.encoder, video.path, frames=self.frames, start=video.start, end=video.end).cpu()
        metadata = {"video": video.path, "start": str(video.start), "end": str(video.end), "frames": str(self.frames)}
        save_tensors(self.path(video), {TENSOR_NAME: x}, metadata=metadata)
        return x

    def get(self, video: VideoRef) -> torch.Tensor:
        """X ``(m, o, q)`` of ``video``: read from the cache, computed and stored on a miss."""
        path = self.path(video)
        if not path.is_file():
            return self.compute(video)
        tensors = load_tensors(path)
        if TENSOR_NAME not in tensors:
            raise InputError(f"cached features lack the tensor '{TENSOR_NAME}'; delete the file", file=path)
        return tensors[TENSOR_NAME]

    def fill(
        self, videos: Iterable[VideoRef], *, rank: int = 0, world_size: int = 1, progress: bool | None = None
    ) -> int:
        """Compute every missing X; with several processes, rank r takes every world_size-th clip (of all of them,
        not of those missing: a faster rank may already have stored some) and encodes those of its clips that are
        missing, so each clip is encoded once.

        Returns how many clips this process encoded. Call a barrier afterwards before reading others' clips.
        """
        unique = list(dict.fromkeys(videos))
        missing = [v for v in unique[rank::world_size] if not self.contains(v)]
        show = False if rank != 0 else progress
        with make_progress(disable=None if show is None else not show) as bar:
            task = bar.add_task("encode video", total=len(missing), info=f"{len(unique)} clips, cache {self.root}")
            for video in missing:
                self.compute(video)
                bar.advance(task)
        return len(missing)


def _ensure_writable(root: Path) -> None:
    """Raise an InputError naming ``root`` when features cannot be written there."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the feature cache folder ({exc.strerror})", file=root) from None
    if not os.access(root, os.W_OK):
        raise InputError("the feature cache folder is not writable", file=root)
