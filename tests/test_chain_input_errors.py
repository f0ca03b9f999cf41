"""Bad input through the Python API is an InputError naming the field, whatever the bundle can use."""

from __future__ import annotations

from pathlib import Path

import pytest

from elmd_sdk.chains import ELMDChain
from elmd_sdk.errors import InputError
from elmd_sdk.models.chat_model import ELMDChatModel


@pytest.mark.parametrize(
    ("video", "field", "message"),
    [
        ("missing.mp4", "video", "file not found"),
        ({"path": "CLIP", "start": 5.0, "end": 2.0}, "video.end", "must come after start"),
        ({"path": "CLIP", "start": -1.0}, "video.start", "non-negative"),
        ({"path": "CLIP", "end": float("inf")}, "video.end", "finite"),
    ],
)
def test_bad_videos_are_refused_even_without_a_projector(
    chain: ELMDChain, tmp_path: Path, video: object, field: str, message: str
) -> None:
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not decoded: only the path and the time range are checked here")
    video = {**video, "path": str(clip)} if isinstance(video, dict) else str(tmp_path / str(video))
    assert not chain.video_enabled
    with pytest.raises(InputError, match=message) as error:
        chain.invoke({"utterance": "Look at this.", "video": video})
    assert error.value.field == field


def test_construction_errors_name_the_field(elmd_home: str) -> None:
    with pytest.raises(InputError, match="greater than 0") as error:
        ELMDChatModel.load(None, max_new_tokens=0)
    assert error.value.field == "max_new_tokens"
    with pytest.raises(InputError) as error:
        ELMDChain.default(k=0)
    assert error.value.field == "k"
