"""Frame sampling (paper 3.4): m evenly spaced RGB frames from a video file, a folder of images or a list of frames.

Video files are probed with moviepy and decoded by moviepy's ffmpeg binary, which seeks to each wanted time instead of
decoding the whole file, so the cost grows with ``m`` (and the codec's keyframe spacing), not with the video's length.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from elmd_sdk.errors import InputError

FFMPEG_TIMEOUT_S = 120
"""Seconds one ffmpeg run may take before the file is reported as undecodable (a guard against hangs)."""
INPUTS_PER_FFMPEG = 16
"""Seeks (frames) per ffmpeg process: one start for a usual m = 8, bounded decoder memory for large m."""

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})

FrameSource = str | Path | Sequence[Image.Image | np.ndarray]


def sample_frames(
    source: FrameSource,
    m: int = 8,
    start: float | None = None,
    end: float | None = None,
    overrun: Literal["clamp", "error"] = "clamp",
) -> np.ndarray:
    """Sample ``m`` evenly spaced frames as a ``(m, H, W, 3)`` uint8 RGB array.

    Frame ``i`` is the one shown at the centre of the ``i``-th of ``m`` equal parts of ``[start, end]`` (seconds; the
    whole clip when ``None``). A range reaching past the end of the video is cut to the video's end with a warning
    (``overrun="clamp"``) or refused (``overrun="error"``). A folder of images (sorted by name, numbers compared as
    numbers) or a list of frames is sampled the same way over its indices; ``start``/``end`` need a video file.
    Every bad input raises :class:`~elmd_sdk.errors.InputError` naming the file and the problem.
    """
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise InputError(f"must be a positive integer, got {m!r}", field="m")
    if overrun not in ("clamp", "error"):
        raise InputError(f"must be 'clamp' or 'error', got {overrun!r}", field="overrun")
    if isinstance(source, str | Path):
        path = Path(source)
        if not path.exists():
            raise InputError("file not found", file=path)
        if path.is_dir():
            _refuse_range(start, end, path)
            return _sample_folder(path, m)
        return _sample_video(path, m, start, end, overrun)
    _refuse_range(start, end, None)
    return _sample_list(source, m)


def segment_centres(lo: float, hi: float, m: int) -> np.ndarray:
    """Centres of ``m`` equal parts of ``[lo, hi]``: the evenly spaced sampling points used for every source."""
    return lo + (np.arange(m, dtype=np.float64) + 0.5) * (hi - lo) / m  # (m,)


def _refuse_range(start: float | None, end: float | None, path: Path | None) -> None:
    """A time range needs a video file: image sequences carry no timestamps."""
    if start is not None or end is not None:
        raise InputError("start/end need a video file; a folder or list of frames is sampled whole", file=path)


def _sample_video(path: Path, m: int, start: float | None, end: float | None, overrun: str) -> np.ndarray:
    """Probe a video file, check ``[start, end]`` against it and read the frames at the ``m`` sampling times."""
    lo = 0.0 if start is None else float(start)
    if lo < 0:
        raise InputError(f"start {lo:g} s is negative", file=path, field="start")
    if end is not None:
        if float(end) == lo:
            raise InputError(f"zero-length range [{lo:g}, {float(end):g}] s", file=path, field="end")
        if float(end) < lo:
            raise InputError(f"inverted range: start {lo:g} s is after end {float(end):g} s", file=path, field="end")
    info = probe_video(path)
    hi = _clamp_end(path, lo, None if end is None else float(end), info.duration, info.fps, overrun)
    # The frame shown at time t is frame floor(t * fps) (moviepy's convention); seek just before its timestamp.
    indices = np.floor(segment_centres(lo, hi, m) * info.fps + 1e-5)  # (m,)
    return _read_frames(path, info, np.maximum(indices / info.fps - 1e-5, 0.0))


@dataclass(frozen=True)
class _VideoInfo:
    """What the sampler needs to know about a video stream."""

    duration: float
    fps: float
    width: int
    height: int


def probe_video(path: Path) -> _VideoInfo:
    """Read duration, frame rate and frame size from the container header (moviepy's ``ffmpeg -i`` parser); an
    InputError naming the file when it is not a video with frames."""
    from moviepy.video.io.ffmpeg_reader import ffmpeg_parse_infos

    try:
        infos = ffmpeg_parse_infos(str(path.resolve()), decode_file=False)
    except Exception as exc:  # moviepy wraps every parse failure of ffmpeg's text output in its own way
        raise InputError(f"not a readable video file ({_ffmpeg_reason(str(exc))})", file=path) from None
    duration = float(infos.get("video_duration") or 0.0)
    fps = float(infos.get("video_fps") or 0.0)
    if not infos.get("video_found") or duration <= 0 or fps <= 0 or not infos.get("video_n_frames"):
        raise InputError("the file has no video frames", file=path)
    width, height = infos["video_size"]
    if abs(infos.get("video_rotation", 0)) in (90, 270):  # ffmpeg rotates such frames when decoding them
        width, height = height, width
    return _VideoInfo(duration, fps, int(width), int(height))


def _read_frames(path: Path, info: _VideoInfo, times: np.ndarray) -> np.ndarray:
    """Decode one frame at each time, ``INPUTS_PER_FFMPEG`` seeks per ffmpeg process (``-ss`` before each ``-i``).

    Each input seeks to its keyframe and decodes only up to its time, so the cost grows with the number of frames
    and the keyframe spacing, not with the video's length, and ffmpeg starts once for 8 frames, not 8 times.
    """
    chunks = [times[i : i + INPUTS_PER_FFMPEG] for i in range(0, len(times), INPUTS_PER_FFMPEG)]
    return np.concatenate([_decode_at(path, info, chunk) for chunk in chunks])  # (m, H, W, 3)


def _decode_at(path: Path, info: _VideoInfo, times: np.ndarray) -> np.ndarray:
    """One ffmpeg run: input i seeks to ``times[i]``; its first frame goes to raw RGB file i."""
    from moviepy.config import FFMPEG_BINARY

    cmd = [FFMPEG_BINARY, "-nostdin", "-loglevel", "error"]
    source = str(path.resolve())  # absolute: a name like "concat:x" or "-x" is never read as a protocol or option
    for t in times:
        cmd += ["-ss", f"{t:.6f}", "-i", source]
    nbytes = info.width * info.height * 3
    with tempfile.TemporaryDirectory(prefix="elmd-frames-") as tmp:
        outputs = [Path(tmp) / f"{i}.rgb" for i in range(len(times))]
        for i, out in enumerate(outputs):
            cmd += ["-map", f"{i}:v:0", "-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", str(out)]
        try:
            run = subprocess.run(cmd, capture_output=True, timeout=FFMPEG_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise InputError(f"ffmpeg did not finish decoding within {FFMPEG_TIMEOUT_S} s", file=path) from None
        frames = []
        for t, out in zip(times, outputs, strict=True):
            if run.returncode != 0 or not out.is_file() or out.stat().st_size != nbytes:
                detail = first_line(run.stderr.decode("utf-8", "replace")) or "no frame there"
                raise InputError(f"could not decode the frame at {t:.3f} s ({detail})", file=path)
            frames.append(np.fromfile(out, dtype=np.uint8).reshape(info.height, info.width, 3))
    return np.stack(frames)  # (len(times), H, W, 3)


def _ffmpeg_reason(message: str) -> str:
    """The useful part of moviepy's probe error: ffmpeg's first error line, or why the file has no duration."""
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", line).strip() for line in message.splitlines()[1:]]
    errors = [line for line in lines if re.search(r"error|invalid|not found|no such", line, re.IGNORECASE)]
    if errors:
        return errors[0]
    if "Duration: N/A" in message:
        return "ffmpeg finds no duration: a still image or not a video"
    return first_line(message)


def first_line(text: object) -> str:
    """First non-empty line of an error message (ffmpeg and moviepy messages run over many lines)."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def _clamp_end(path: Path, lo: float, end: float | None, duration: float, fps: float, overrun: str) -> float:
    """End of the sampled range: the video's end when ``end`` is None, else ``end`` checked against the duration.

    An end less than one frame past the duration is container rounding and is cut silently.
    """
    if lo >= duration:
        raise InputError(f"range starts at {lo:g} s, at or after the end of the video ({duration:g} s)", file=path)
    if end is None or end <= duration:
        return duration if end is None else end
    if end - duration > 1.0 / fps:
        problem = f"range end {end:g} s is past the end of the video ({duration:g} s)"
        if overrun == "error":
            raise InputError(problem, file=path, field="end")
        warnings.warn(f"{path}: {problem}; clamped to {duration:g} s", UserWarning, stacklevel=4)
    return duration


def _natural_key(path: Path) -> list[int | str]:
    """Sort key comparing digit runs as numbers, so frame_2 comes before frame_10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def _sample_folder(folder: Path, m: int) -> np.ndarray:
    """Sample ``m`` images of a folder, opening only the chosen files."""
    files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), key=_natural_key)
    if not files:
        raise InputError(f"folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})", file=folder)
    chosen = [files[i] for i in _indices(len(files), m)]
    frames = []
    for file in chosen:
        try:
            with Image.open(file) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except (OSError, UnidentifiedImageError) as exc:
            raise InputError(f"not a readable image ({exc})", file=file) from None
    return _stack(frames, [{"file": str(file)} for file in chosen])


def _sample_list(frames: Sequence[Image.Image | np.ndarray], m: int) -> np.ndarray:
    """Sample ``m`` frames of an in-memory sequence of PIL images or arrays."""
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        frames = list(frames)
    if len(frames) == 0:
        raise InputError("the list of frames is empty", field="source")
    chosen = [int(i) for i in _indices(len(frames), m)]
    return _stack([_to_rgb(frames[i], i) for i in chosen], [{"field": f"frame {i}"} for i in chosen])


def _indices(n: int, m: int) -> np.ndarray:
    """Indices of the frames shown at the ``m`` segment centres of an ``n``-frame sequence (repeats when m > n)."""
    return np.minimum(np.floor(segment_centres(0.0, float(n), m)).astype(np.int64), n - 1)  # (m,)


def _to_rgb(frame: Image.Image | np.ndarray, index: int) -> np.ndarray:
    """A PIL image or uint8 array (gray, RGB or RGBA) as an ``(H, W, 3)`` uint8 array."""
    if isinstance(frame, Image.Image):
        return np.asarray(frame.convert("RGB"))
    array = np.asarray(frame)
    if array.dtype != np.uint8:
        raise InputError(f"must be uint8, got {array.dtype}", field=f"frame {index}")
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=-1)
    if array.ndim == 3 and array.shape[-1] in (3, 4):
        return array[..., :3]
    raise InputError(f"must be (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}", field=f"frame {index}")


def _stack(frames: list[np.ndarray], where: list[dict[str, str]]) -> np.ndarray:
    """Stack equally sized frames; ``where`` locates each frame (file or field) for the error on a differing size."""
    for frame, location in zip(frames, where, strict=True):
        if frame.shape != frames[0].shape:
            problem = f"frame size {frame.shape[:2]} differs from the first sampled frame's {frames[0].shape[:2]}"
            raise InputError(problem, file=location.get("file"), field=location.get("field"))
    return np.ascontiguousarray(np.stack(frames))  # (m, H, W, 3)
