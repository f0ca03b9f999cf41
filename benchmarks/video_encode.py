"""Video encoding time (sample 8 frames + encode) for a 60 s video as a ratio of the same for a 5 s video.

Both videos are generated here (640x360, 25 fps, libx264 with its default keyframe spacing of up to 250 frames).
A ratio near 1 shows that sampling seeks instead of decoding the whole file (target < 1.5). For contrast it also
times moviepy's own reader fetching the same frames one ``get_frame`` at a time (one ffmpeg start per far jump).

    .venv/bin/python benchmarks/video_encode.py [--repeats 7] [--encoder PATH_OR_NAME]
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TARGET_RATIO = 1.5
M = 8


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per video; the median is reported")
    parser.add_argument("--encoder", default=None, help="visual encoder path or name (default: the offline default)")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 suits the 58k-parameter default on a busy machine)"
    )
    return parser.parse_args()


def make_video(path: Path, seconds: int, fps: int) -> Path:
    """A moving-pattern video of the given length, written with moviepy's default libx264 settings."""
    from moviepy import VideoClip

    def frame(t: float) -> np.ndarray:
        i = round(t * fps)
        image = np.zeros((360, 640, 3), dtype=np.uint8)
        image[..., 0] = (i * 7) % 256
        image[90:270, (i * 5) % 600 : (i * 5) % 600 + 40] = 255
        return image

    VideoClip(frame, duration=seconds).with_fps(fps).write_videofile(
        str(path), codec="libx264", audio=False, logger=None
    )
    return path


def children_cpu_s() -> float:
    """CPU seconds used so far by finished child processes (the ffmpeg decoders)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median_ms(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median wall time of ``fn`` and median CPU time of its child processes, in ms, after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), children_cpu_s()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(children_cpu_s() - start_cpu)
    return 1000 * statistics.median(wall), 1000 * statistics.median(cpu)


def moviepy_get_frame(path: Path) -> np.ndarray:
    """Baseline for contrast: moviepy's reader asked for the same m frames one after another."""
    from moviepy.video.io.ffmpeg_reader import FFMPEG_VideoReader

    from elmd_sdk.video.frames import segment_centres

    reader = FFMPEG_VideoReader(str(path))
    try:
        return np.stack([reader.get_frame(t) for t in segment_centres(0.0, reader.duration, M)])
    finally:
        reader.close()


def main() -> None:
    args = parse_args()
    import torch

    from elmd_sdk.video import load_visual_encoder, sample_frames

    torch.set_num_threads(args.threads)
    encoder = load_visual_encoder(args.encoder)
    with tempfile.TemporaryDirectory(prefix="elmd-video-bench-") as tmp:
        videos = {seconds: make_video(Path(tmp) / f"{seconds}s.mp4", seconds, args.fps) for seconds in (5, 60)}
        cases: dict[str, Callable[[Path], object]] = {
            "sample_frames + encode": lambda p: encoder.encode(sample_frames(p, m=M)),
            "sample_frames only": lambda p: sample_frames(p, m=M),
            "moviepy get_frame per frame (contrast)": moviepy_get_frame,
        }
        rows = {
            label: {s: median_ms(functools.partial(fn, p), args.repeats) for s, p in videos.items()}
            for label, fn in cases.items()
        }
    print(f"encoder: {encoder.fingerprint()['name']}; m = {M}; median of {args.repeats} runs; 640x360 @ {args.fps} fps")
    print(f"{'':42s}{'5 s video':>12s}{'60 s video':>12s}{'ratio':>8s}   ffmpeg CPU 5 s / 60 s")
    for label, result in rows.items():
        (wall5, cpu5), (wall60, cpu60) = result[5], result[60]
        print(f"{label:42s}{wall5:10.1f}ms{wall60:10.1f}ms{wall60 / wall5:8.2f}   {cpu5:.0f} / {cpu60:.0f} ms")
    ratio = rows["sample_frames + encode"][60][0] / rows["sample_frames + encode"][5][0]
    verdict = "meets" if ratio < TARGET_RATIO else "MISSES"
    print(f"60 s / 5 s encoding time: {ratio:.2f} ({verdict} the target < {TARGET_RATIO})")


if __name__ == "__main__":
    main()
