"""OpenAI request -> ELMD turn: history, background, sampling options and the video rules."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from elmd_sdk.serve import ServeConfig
from elmd_sdk.serve.mapping import RequestError, chain_turn
from elmd_sdk.serve.openai_types import ChatCompletionRequest

HELLO = [{"role": "user", "content": "hello"}]


def _turn(config: ServeConfig | None = None, *, video_enabled: bool = True, **fields: Any) -> Any:
    request = ChatCompletionRequest.model_validate({"model": "default", "messages": HELLO, **fields})
    with chain_turn(request, config or ServeConfig(), video_enabled=video_enabled) as turn:
        return turn


def test_history_background_and_options() -> None:
    messages = [
        {"role": "system", "content": "A party."},
        {"role": "user", "content": "Guess what?"},
        {"role": "developer", "content": "Friends."},
        {"role": "assistant", "content": "What?"},
        {"role": "user", "content": [{"type": "text", "text": "I got "}, {"type": "text", "text": "the job"}]},
    ]
    turn = _turn(messages=messages, max_tokens=9, temperature=0, top_p=0.5, seed=3, stop="END")
    assert turn.input == {
        "utterance": "I got the job",
        "history": [{"role": "user", "content": "Guess what?"}, {"role": "assistant", "content": "What?"}],
        "background": "A party.\nFriends.",
    }
    assert turn.options == {"max_new_tokens": 9, "temperature": 0, "top_p": 0.5, "seed": 3, "stop": ["END"]}
    assert _turn(messages=messages, background="Given.").input["background"] == "Given."
    assert _turn(max_completion_tokens=4, max_tokens=9).options == {"max_new_tokens": 4}
    assert _turn(emotion="sad", allowed_emotions=["sad"]).input["emotion"] == "sad"


def _video_file(folder: Path) -> Path:
    """A real 1-second video (moviepy writes it)."""
    import numpy as np
    from moviepy import ImageSequenceClip

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "clip.mp4"
    frames = [np.full((32, 32, 3), 40 * i, dtype=np.uint8) for i in range(5)]
    ImageSequenceClip(frames, fps=5).write_videofile(str(path), codec="libx264", logger=None)
    return path


def _refused(status: int, param: str, config: ServeConfig, **fields: Any) -> RequestError:
    with pytest.raises(RequestError) as caught:
        _turn(config, **fields)
    assert (caught.value.status, caught.value.param) == (status, param), caught.value.message
    return caught.value


def test_video_paths_stay_under_the_video_root(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    clip = _video_file(root)
    config = ServeConfig(video_root=root)
    turn = _turn(config, video={"path": "clip.mp4", "start": 0.1, "end": 0.5})
    assert turn.input["video"] == {"path": str(clip.resolve()), "start": 0.1, "end": 0.5}
    outside = _video_file(tmp_path / "elsewhere")
    _refused(403, "video.path", config, video={"path": "../elsewhere/clip.mp4"})
    _refused(403, "video.path", config, video={"path": str(outside)})
    os.symlink(outside, root / "link.mp4")
    _refused(403, "video.path", config, video={"path": "link.mp4"})
    _refused(400, "video.path", config, video={"path": "missing.mp4"})
    (root / "notes.mp4").write_text("not a video")
    assert "not a video" in _refused(400, "video", config, video={"path": "notes.mp4"}).message
    _refused(403, "video.path", ServeConfig(), video={"path": "clip.mp4"})  # no root: no paths at all
    _refused(400, "video", config, video_enabled=False, video={"path": "clip.mp4"})
    _refused(400, "video", config, video={"path": "clip.mp4", "data": "AAAA", "filename": "a.mp4"})
    _refused(400, "video.end", config, video={"path": "clip.mp4", "start": 2, "end": 1})


def test_uploaded_videos_are_checked_and_removed_after_the_request(tmp_path: Path) -> None:
    data = base64.b64encode(_video_file(tmp_path).read_bytes()).decode()
    config = ServeConfig(max_video_bytes=10**6)
    request = ChatCompletionRequest.model_validate(
        {"model": "default", "messages": HELLO, "video": {"data": data, "filename": "Clip.MP4"}}
    )
    with chain_turn(request, config, video_enabled=True) as turn:
        upload = Path(turn.input["video"]["path"])
        assert upload.read_bytes() == base64.b64decode(data) and upload.suffix == ".mp4"
    assert not upload.exists()
    _refused(413, "video.data", ServeConfig(max_video_bytes=100), video={"data": data, "filename": "a.mp4"})
    _refused(400, "video.data", config, video={"data": "not base64!", "filename": "a.mp4"})
    _refused(400, "video.filename", config, video={"data": data, "filename": "a.exe"})
    junk = base64.b64encode(b"hello").decode()
    _refused(400, "video", config, video={"data": junk, "filename": "a.mp4"})
