"""Frame sampling on videos generated here with moviepy: each frame's index is coded in its colour."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from elmd_sdk.errors import InputError
from elmd_sdk.video.frames import sample_frames

FPS = 10


def colour(i: int) -> np.ndarray:
    """RGB coding frame index i (0 <= i < 400) in steps of 12, far above h264's error on flat frames."""
    return np.array([(i % 20) * 12 + 6, (i // 20) * 12 + 6, 128], dtype=np.uint8)


def indices_of(frames: np.ndarray) -> list[int]:
    """Decode the frame indices from the centre pixel of each frame."""
    centre = frames[:, frames.shape[1] // 2, frames.shape[2] // 2].astype(float)  # (m, 3)
    return [int(round((r - 6) / 12) + 20 * round((g - 6) / 12)) for r, g, _ in centre]


def write_video(path: Path, n_frames: int) -> Path:
    from moviepy import VideoClip

    clip = VideoClip(lambda t: np.broadcast_to(colour(round(t * FPS)), (32, 32, 3)).copy(), duration=n_frames / FPS)
    clip.with_fps(FPS).write_videofile(str(path), codec="libx264", audio=False, logger=None)
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {"short": write_video(root / "short.mp4", 20), "long": write_video(root / "long.mp4", 300)}


def test_whole_clip_gives_m_frames_at_segment_centres(videos: dict[str, Path]) -> None:
    frames = sample_frames(videos["short"], m=8)
    assert frames.shape == (8, 32, 32, 3) and frames.dtype == np.uint8
    # 2 s at 10 fps: centres 0.125, 0.375, ... s show frames floor(10 t)
    assert indices_of(frames) == [1, 3, 6, 8, 11, 13, 16, 18]


def test_far_apart_frames_in_a_long_video_come_back_in_order(videos: dict[str, Path]) -> None:
    frames = sample_frames(videos["long"], m=8)
    assert indices_of(frames) == [18, 56, 93, 131, 168, 206, 243, 281]


def test_more_frames_than_one_ffmpeg_run_takes(videos: dict[str, Path]) -> None:
    frames = sample_frames(videos["long"], m=20)  # 16 seeks per ffmpeg run, then 4 more
    assert indices_of(frames) == [7 + 15 * i for i in range(20)]


def test_range_inside_a_long_video(videos: dict[str, Path]) -> None:
    frames = sample_frames(videos["long"], m=4, start=10.0, end=20.0)
    assert indices_of(frames) == [112, 137, 162, 187]


def test_default_m_is_eight(videos: dict[str, Path]) -> None:
    assert sample_frames(str(videos["short"])).shape[0] == 8


def test_range_past_the_end_is_clamped_with_a_warning(videos: dict[str, Path]) -> None:
    with pytest.warns(UserWarning, match="past the end"):
        frames = sample_frames(videos["short"], m=4, start=1.0, end=5.0)
    assert indices_of(frames) == [11, 13, 16, 18]  # sampled over [1, 2] s


def test_range_past_the_end_is_refused_when_asked(videos: dict[str, Path]) -> None:
    with pytest.raises(InputError, match="past the end") as err:
        sample_frames(videos["short"], m=4, start=1.0, end=5.0, overrun="error")
    assert str(videos["short"]) in str(err.value)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        (1.5, 0.5, "inverted range"),
        (1.0, 1.0, "zero-length range"),
        (5.0, None, "after the end of the video"),
        (-1.0, None, "negative"),
    ],
)
def test_bad_ranges(videos: dict[str, Path], start: float, end: float | None, message: str) -> None:
    with pytest.raises(InputError, match=message) as err:
        sample_frames(videos["short"], start=start, end=end)
    assert str(videos["short"]) in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="file not found") as err:
        sample_frames(tmp_path / "nope.mp4")
    assert "nope.mp4" in str(err.value)


def test_text_file_renamed_mp4(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video\n")
    with pytest.raises(InputError, match="not a readable video file") as err:
        sample_frames(fake)
    assert "fake.mp4" in str(err.value)


def test_file_without_video_frames(tmp_path: Path) -> None:
    audio = tmp_path / "voice.wav"
    with wave.open(str(audio), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"\0\0" * 8000)
    with pytest.raises(InputError, match="no video frames") as err:
        sample_frames(audio)
    assert "voice.wav" in str(err.value)


def test_folder_is_sorted_by_name_with_numbers_as_numbers(tmp_path: Path) -> None:
    for i in range(12):  # frame_2 must come before frame_10
        Image.fromarray(np.broadcast_to(colour(i), (8, 8, 3)).copy()).save(tmp_path / f"frame_{i}.png")
    (tmp_path / "notes.txt").write_text("ignored")
    frames = sample_frames(tmp_path, m=4)
    assert frames.shape == (4, 8, 8, 3)
    assert indices_of(frames) == [1, 4, 7, 10]


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no images") as err:
        sample_frames(tmp_path)
    assert str(tmp_path) in str(err.value)


def test_list_of_frames_repeats_when_m_exceeds_its_length() -> None:
    frames = [np.broadcast_to(colour(i), (4, 6, 3)).copy() for i in range(3)]
    assert indices_of(sample_frames(frames, m=6)) == [0, 0, 1, 1, 2, 2]


def test_list_accepts_pil_gray_and_rgba() -> None:
    frames = [
        Image.new("RGB", (6, 4), (1, 2, 3)),
        np.full((4, 6), 7, dtype=np.uint8),
        np.full((4, 6, 4), 9, dtype=np.uint8),
    ]
    out = sample_frames(frames, m=3)
    assert out.shape == (3, 4, 6, 3)
    assert (
        out[0, 0, 0].tolist() == [1, 2, 3] and out[1, 0, 0].tolist() == [7, 7, 7] and out[2, 0, 0].tolist() == [9] * 3
    )


@pytest.mark.parametrize(
    ("source", "kwargs", "message"),
    [
        ([], {}, "empty"),
        ([np.zeros((4, 4, 3), np.uint8)], {"start": 0.0}, "need a video file"),
        ([np.zeros((4, 4, 3), np.uint8)], {"m": 0}, "positive integer"),
        ([np.zeros((4, 4, 3), np.uint8)], {"overrun": "ignore"}, "'clamp' or 'error'"),
        ([np.zeros((4, 4, 3), np.float32)], {}, "uint8"),
        ([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)], {"m": 2}, "differs"),
    ],
)
def test_bad_lists(source: list[np.ndarray], kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        sample_frames(source, **kwargs)  # type: ignore[arg-type]
