"""M3ED loader (also MMED, same format): one ``annotation.json`` of shows, dialogue clips and sentences."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn

from elmd_sdk.data.records import Dialogue, Sentence, VideoRef
from elmd_sdk.data.sources import clean_text, decode_text, last_json_key, read_bytes
from elmd_sdk.errors import InputError

DEFAULT_TICKS_PER_SECOND = 25.0
"""M3ED's ``HH:MM:SS:xx`` counts ``xx`` in frames of its 25 fps videos (as the M3ED authors' scripts do)."""


def parse_timestamp(value: str, *, ticks_per_second: float = DEFAULT_TICKS_PER_SECOND) -> float:
    """Seconds from ``HH:MM:SS:xx``, where ``xx`` counts units of ``1 / ticks_per_second`` seconds."""
    parts = value.strip().split(":")
    if len(parts) != 4 or not all(p.isdigit() for p in parts):
        raise ValueError(f"expected HH:MM:SS:xx, found {value!r}")
    hours, minutes, seconds, ticks = map(int, parts)
    if minutes >= 60 or seconds >= 60 or ticks >= ticks_per_second:
        raise ValueError(
            f"{value!r} is out of range (sub-second part must be < {ticks_per_second:g} ticks per second; "
            "set the right unit with --fps)"
        )
    return hours * 3600 + minutes * 60 + seconds + ticks / ticks_per_second


class _Reader:
    """Walks a parsed annotation.json, locating each problem by line (of the nearest key) and field path."""

    def __init__(self, file: str, text: str, ticks_per_second: float) -> None:
        self.file, self.text, self.ticks_per_second = file, text, ticks_per_second
        self.pos, self.line = 0, 1

    def key_line(self, key: str) -> int:
        """Line of the next occurrence of ``"key"`` (keys are met in document order, as json.loads keeps it)."""
        found = self.text.find(json.dumps(key, ensure_ascii=False), self.pos)
        if found >= 0:
            self.line += self.text.count("\n", self.pos, found)
            self.pos = found + 1
        return self.line

    def fail(self, problem: str, keys: list[str]) -> NoReturn:
        raise InputError(problem, file=self.file, line=self.line, field=".".join(keys) or None)

    def get(self, obj: Any, key: str, kind: type, keys: list[str]) -> Any:
        """``obj[key]``, which must be a non-empty object (``kind=dict``) or string."""
        value = obj.get(key)
        if not isinstance(value, kind) or not value:
            self.fail(f"expected a non-empty {'object' if kind is dict else 'string'}", [*keys, key])
        return value

    def clip(self, show: str, clip_id: str, clip: Any, video_path: str | None) -> Dialogue:
        """One dialogue clip ``<show>_<n>``."""
        self.key_line(clip_id)
        if not isinstance(clip, dict):
            self.fail("expected an object", [show, clip_id])
        speakers = clip.get("SpeakerInfo")
        names: dict[str, str] = {}
        if isinstance(speakers, dict):
            for letter, info in speakers.items():
                name = info.get("Name") if isinstance(info, dict) else None
                if isinstance(name, str) and name.strip():
                    names[letter] = name.strip()
        sentences = [
            self.sentence([show, clip_id, "Dialog", utt_id], utt, names, video_path)
            for utt_id, utt in self.get(clip, "Dialog", dict, [show, clip_id]).items()
        ]
        return Dialogue(clip_id, sentences, show)

    def sentence(self, keys: list[str], utt: Any, names: dict[str, str], video_path: str | None) -> Sentence:
        """One sentence; its speaker is named by ``SpeakerInfo`` when given, else by its letter."""
        self.key_line(keys[-1])
        if not isinstance(utt, dict):
            self.fail("expected an object", keys)
        letter = self.get(utt, "Speaker", str, keys)
        label = self.get(self.get(utt, "EmoAnnotation", dict, keys), "final_main_emo", str, [*keys, "EmoAnnotation"])
        video = None
        if video_path is not None:
            times = []
            for key in ("StartTime", "EndTime"):
                try:
                    times.append(parse_timestamp(self.get(utt, key, str, keys), ticks_per_second=self.ticks_per_second))
                except ValueError as exc:
                    self.fail(str(exc), [*keys, key])
            video = VideoRef(video_path, times[0], times[1])
        return Sentence(
            speaker=names.get(letter, letter),
            text=clean_text(self.get(utt, "Text", str, keys)),
            label=label,
            file=self.file,
            line=self.line,
            label_field=".".join([*keys, "EmoAnnotation", "final_main_emo"]),
            video=video,
        )


def load_m3ed(
    path: str | Path,
    *,
    video_root: str | Path | None = None,
    ticks_per_second: float = DEFAULT_TICKS_PER_SECOND,
    encoding: str = "utf-8",
) -> list[Dialogue]:
    """Read ``annotation.json`` into one dialogue per clip ``<show>_<n>``, sentences in file order.

    Speakers are named by ``SpeakerInfo[..].Name`` when given, else by their letter; the label is
    ``EmoAnnotation.final_main_emo``. With ``video_root``, each sentence refers to the clip
    ``<video_root>/<show>/<show>_<n>.mp4`` cut to its ``StartTime``..``EndTime`` (see :func:`parse_timestamp`).
    """
    file = str(path)
    text = decode_text(
        read_bytes(path), file=file, encoding=encoding, field_at=lambda line, prefix: last_json_key(prefix)
    )
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg} at column {exc.colno})", file=file, line=exc.lineno) from None
    reader = _Reader(file, text, ticks_per_second)
    if not isinstance(data, dict):
        reader.fail("expected a JSON object of shows", [])
    dialogues: list[Dialogue] = []
    for show, clips in data.items():
        reader.key_line(show)
        if not isinstance(clips, dict):
            reader.fail("expected an object of dialogue clips", [show])
        for clip_id, clip in clips.items():
            video_path = str(Path(video_root) / show / f"{clip_id}.mp4") if video_root is not None else None
            dialogues.append(reader.clip(show, clip_id, clip, video_path))
    return dialogues
