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


# -- every limit at exactly its value and one over -----------------------------------------------------------------


def _conversation(count: int) -> list[dict[str, str]]:
    """``count`` messages, alternating and ending with the user's."""
    return [{"role": "user" if (count - 1 - i) % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(count)]


def test_the_message_count_limit_takes_exactly_the_limit() -> None:
    config = ServeConfig(max_messages=5)
    turn = _turn(config, messages=_conversation(5))
    assert turn.input["utterance"] == "m4" and len(turn.input["history"]) == 4
    error = _refused(400, "messages", config, messages=_conversation(6))
    assert error.message == "at most 5 messages per request"


def test_the_message_length_limit_takes_exactly_the_limit_in_any_message() -> None:
    config = ServeConfig(max_message_chars=10)
    assert _turn(config, messages=[{"role": "user", "content": "x" * 10}]).input["utterance"] == "x" * 10
    parts = [{"type": "text", "text": "x" * 6}, {"type": "text", "text": "y" * 5}]  # 11 characters once joined
    error = _refused(400, "messages[0].content", config, messages=[{"role": "user", "content": parts}])
    assert error.code == "string_above_max_length" and "has 11 characters; the limit is 10" in error.message
    system = [{"role": "system", "content": "s" * 11}, {"role": "user", "content": "hi"}]
    _refused(400, "messages[0].content", config, messages=system)  # system text counts too
    history = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b" * 11}, *HELLO]
    _refused(400, "messages[1].content", config, messages=history)


@pytest.mark.parametrize("limit", [30, 31, 32])  # every remainder of the limit modulo 3 (base64 works in threes)
def test_the_upload_size_limit_takes_exactly_the_limit(limit: int) -> None:
    config = ServeConfig(max_video_bytes=limit)

    def upload(size: int) -> dict[str, str]:
        return {"data": base64.b64encode(b"\x00" * size).decode(), "filename": "a.mp4"}

    # exactly the limit passes both size checks and is then probed (these zeros are no video): 400, not 413
    assert "not a video" in _refused(400, "video", config, video=upload(limit)).message
    assert _refused(413, "video.data", config, video=upload(limit + 1)).message == f"the video is over {limit} bytes"


def test_the_encoded_upload_is_refused_before_decoding_only_beyond_the_largest_encoding() -> None:
    config = ServeConfig(max_video_bytes=30)  # at most 40 base64 characters, 44 with the slack of 4
    assert _refused(400, "video.data", config, video={"data": "!" * 44, "filename": "a.mp4"}).message == (
        "not valid base64"  # long enough to be a video of the limit: decoded (and refused as not base64)
    )
    _refused(413, "video.data", config, video={"data": "!" * 45, "filename": "a.mp4"})  # refused unread


def test_a_video_range_must_go_forward(tmp_path: Path) -> None:
    root = tmp_path / "videos"
    _video_file(root)
    config = ServeConfig(video_root=root)
    _refused(400, "video.end", config, video={"path": "clip.mp4", "start": 0.5, "end": 0.5})
    assert _turn(config, video={"path": "clip.mp4", "start": 0.5, "end": 0.6}).input["video"]["end"] == 0.6
    assert _turn(config, video={"path": "clip.mp4", "start": 0, "end": 0.1}).input["video"]["start"] == 0


@pytest.mark.parametrize(
    ("field", "accepted", "refused"),
    [
        ("temperature", [0, 2], [-0.01, 2.01]),
        ("top_p", [0.01, 1], [0, 1.01]),
        ("max_tokens", [1], [0]),
        ("max_completion_tokens", [1], [0]),
        ("n", [1], [2]),
    ],
)
def test_sampling_fields_take_their_bounds_and_refuse_beyond(
    field: str, accepted: list[float], refused: list[float]
) -> None:
    from pydantic import ValidationError

    for value in accepted:
        ChatCompletionRequest.model_validate({"model": "default", "messages": HELLO, field: value})
    for value in refused:
        with pytest.raises(ValidationError, match=field):
            ChatCompletionRequest.model_validate({"model": "default", "messages": HELLO, field: value})


def test_request_settings_are_passed_only_when_given_and_override_in_order() -> None:
    assert _turn().options == {}  # absent fields keep the bundle's settings
    assert _turn().input == {"utterance": "hello", "history": [], "background": None}
    assert _turn(max_tokens=9).options == {"max_new_tokens": 9}
    assert _turn(temperature=0).options == {"temperature": 0}  # 0 is a setting, not an absent one
    assert _turn(stop=["a", "b"]).options == {"stop": ["a", "b"]}
    assert _turn(stop=[]).options == {}
    assert _turn(allowed_emotions=["sad", "fear"]).input["allowed_emotions"] == ["sad", "fear"]
    system = [{"role": "system", "content": "  "}, {"role": "developer", "content": " Given. "}, *HELLO]
    assert _turn(messages=system).input["background"] == "Given."  # blank system text is left out
    assert _turn(messages=system, background="").input["background"] == ""  # the request's field wins, even empty
