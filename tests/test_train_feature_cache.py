"""Feature cache: X is decoded and encoded once per (clip, range, m, encoder); later reads never touch the video."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from train_fakes import COLOURS, ColourEncoder, write_colour_video

from elmd_sdk.data.records import VideoRef
from elmd_sdk.errors import InputError
from elmd_sdk.trainers.feature_cache import FeatureCache, feature_key
from elmd_sdk.video import tokens as video_tokens


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_colour_video(tmp_path_factory.mktemp("video") / "red.mp4", COLOURS["happy"])


def _forbid_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> np.ndarray:
        raise AssertionError("the video was decoded again")

    monkeypatch.setattr(video_tokens, "sample_frames", fail)  # the cache decodes clips through elmd_sdk.video.tokens


def test_second_read_comes_from_disk_without_decoding(tmp_path: Path, video: Path, monkeypatch) -> None:
    encoder = ColourEncoder()
    cache = FeatureCache(encoder, frames=4, root=tmp_path / "cache")
    clip = VideoRef(str(video), 0.0, 1.0)
    x = cache.get(clip)
    assert x.shape == (4, 2, 4) and encoder.calls == 1 and cache.contains(clip)
    torch.testing.assert_close(x[0, 0, :3], torch.tensor(COLOURS["happy"]) / 255.0, atol=0.03, rtol=0)
    _forbid_decoding(monkeypatch)
    again = FeatureCache(ColourEncoder(), frames=4, root=tmp_path / "cache")  # a later stage, a new process
    assert torch.equal(again.get(clip), x) and again.encoder.calls == 0  # type: ignore[attr-defined]
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert len(files) == 1 and files[0].suffix == ".safetensors"  # no temporary file left behind


def test_key_changes_with_range_frames_encoder_and_file(tmp_path: Path, video: Path) -> None:
    fingerprint = ColourEncoder().fingerprint()
    base = feature_key(VideoRef(str(video), 0.0, 1.0), 4, fingerprint)
    assert base == feature_key(VideoRef(str(video), 0.0, 1.0), 4, dict(fingerprint))
    assert base != feature_key(VideoRef(str(video), 0.0, 2.0), 4, fingerprint)
    assert base != feature_key(VideoRef(str(video), 0.5, 1.0), 4, fingerprint)
    assert base != feature_key(VideoRef(str(video), 0.0, 1.0), 8, fingerprint)
    assert base != feature_key(VideoRef(str(video), 0.0, 1.0), 4, ColourEncoder(salt="other").fingerprint())
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(video.read_bytes())
    before = feature_key(VideoRef(str(copy), 0.0, 1.0), 4, fingerprint)
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file was edited
    assert feature_key(VideoRef(str(copy), 0.0, 1.0), 4, fingerprint) != before


def test_fill_shards_the_clips_over_ranks_whatever_a_faster_rank_stored(tmp_path: Path, video: Path) -> None:
    clips = [VideoRef(str(video), float(s), float(s) + 1.0) for s in range(3)]
    first = FeatureCache(ColourEncoder(), frames=2, root=tmp_path)
    assert first.fill([*clips, clips[0]], rank=0, world_size=2, progress=False) == 2  # clips 0 and 2
    second = FeatureCache(ColourEncoder(), frames=2, root=tmp_path)
    # Rank 0 is done before rank 1 starts: rank 1's share is still clip 1, encoded once (not clip 0 again).
    assert second.fill(clips, rank=1, world_size=2, progress=False) == 1
    assert second.fill(clips, rank=0, world_size=2, progress=False) == 0
    assert all(second.contains(c) for c in clips)


def test_missing_video_is_an_input_error_naming_it(tmp_path: Path) -> None:
    cache = FeatureCache(ColourEncoder(), frames=2, root=tmp_path)
    with pytest.raises(InputError, match=r"nowhere\.mp4"):
        cache.get(VideoRef(str(tmp_path / "nowhere.mp4")))
