"""The native JSONL form of :class:`Sample`: one ``dataclasses.asdict(sample)`` object per line.

Reading validates every field and names the file, line and field of the first problem;
writing is atomic (temporary file, then rename).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

from elmd_sdk.data.labels import EMOTIONS
from elmd_sdk.data.records import Sample, Turn, VideoRef
from elmd_sdk.data.sources import decode_text, last_json_key, read_bytes
from elmd_sdk.errors import InputError
from elmd_sdk.io import atomic_open

_SAMPLE_KEYS = {"dialogue_id", "utterance", "response", "history", "background", "video"}
_TURN_KEYS = {"speaker", "text", "emotion"}
_VIDEO_KEYS = {"path", "start", "end"}


class _Fields:
    """Typed access to one JSON object's fields, raising InputError located at ``file:line`` and ``prefix.key``."""

    def __init__(self, obj: Any, prefix: str, *, file: str | None, line: int | None, allowed: set[str]) -> None:
        self.file, self.line, self.prefix = file, line, prefix
        if not isinstance(obj, dict):
            self.fail(None, f"expected a JSON object, found {type(obj).__name__}")
        self.obj: dict[str, Any] = obj
        for key in obj:
            if key not in allowed:
                self.fail(key, f"unknown field; allowed: {', '.join(sorted(allowed))}")

    def child(self, obj: Any, prefix: str, allowed: set[str]) -> _Fields:
        """The fields of a nested object, located in the same file and line."""
        return _Fields(obj, prefix, file=self.file, line=self.line, allowed=allowed)

    def fail(self, key: str | None, problem: str) -> NoReturn:
        path = ".".join(p for p in (self.prefix, key) if p) or None
        raise InputError(problem, file=self.file, line=self.line, field=path)

    def get(self, key: str, types: type | tuple[type, ...], *, required: bool = True, nullable: bool = False) -> Any:
        """The value of ``key`` checked against ``types`` (bools are never numbers here)."""
        if key not in self.obj:
            if required:
                self.fail(key, "missing field")
            return None
        value = self.obj[key]
        if value is None and nullable:
            return None
        if not isinstance(value, types) or isinstance(value, bool):
            names = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
            self.fail(key, f"expected {names}{' or null' if nullable else ''}, found {json.dumps(value)[:40]}")
        return value


def _turn(parent: _Fields, obj: Any, prefix: str, *, labelled: bool) -> Turn:
    fields = parent.child(obj, prefix, _TURN_KEYS)
    emotion = fields.get("emotion", str, required=labelled, nullable=not labelled)
    if emotion is not None and emotion not in EMOTIONS:
        fields.fail("emotion", f"unknown emotion label {emotion!r}; allowed: {', '.join(EMOTIONS)}")
    speaker, text = fields.get("speaker", str), fields.get("text", str)
    if "\x00" in text:
        fields.fail("text", "holds a NUL character (\\u0000): not text")
    return Turn(speaker, text, emotion)


def sample_from_dict(d: Any, *, file: str | Path | None = None, line: int | None = None) -> Sample:
    """Validate one parsed JSONL object and build its :class:`Sample`.

    ``utterance`` and ``response`` need one of the seven emotions; history turns may have ``null``
    (a label dropped at preparation). Errors name ``file``, ``line`` and the field path.
    """
    fields = _Fields(d, "", file=str(file) if file is not None else None, line=line, allowed=_SAMPLE_KEYS)
    history_items = fields.get("history", list, required=False) or []
    history = [_turn(fields, t, f"history[{i}]", labelled=False) for i, t in enumerate(history_items)]
    video = None
    if (video_obj := fields.get("video", dict, required=False, nullable=True)) is not None:
        vf = fields.child(video_obj, "video", _VIDEO_KEYS)
        start = vf.get("start", (int, float), required=False, nullable=True)
        end = vf.get("end", (int, float), required=False, nullable=True)
        video = VideoRef(vf.get("path", str), start, end)
    return Sample(
        dialogue_id=fields.get("dialogue_id", str),
        utterance=_turn(fields, fields.get("utterance", dict), "utterance", labelled=True),
        response=_turn(fields, fields.get("response", dict), "response", labelled=True),
        history=history,
        background=fields.get("background", str, required=False, nullable=True),
        video=video,
    )


def iter_jsonl(path: str | Path, encoding: str = "utf-8") -> Iterator[Sample]:
    """Yield the samples of a native JSONL file, validating each line (blank lines are skipped)."""
    text = decode_text(
        read_bytes(path), file=path, encoding=encoding, field_at=lambda line, prefix: last_json_key(prefix)
    )
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON ({exc.msg} at column {exc.colno})", file=path, line=number) from None
        yield sample_from_dict(obj, file=path, line=number)


def read_jsonl(path: str | Path, *, require: bool = False) -> list[Sample]:
    """All samples of a native JSONL file (see :func:`iter_jsonl`); with ``require``, none is an InputError."""
    samples = list(iter_jsonl(path))
    if require and not samples:
        raise InputError("no samples in this file", file=path)
    return samples


def write_jsonl(path: str | Path, samples: Iterable[Sample]) -> int:
    """Write samples as native JSONL atomically (UTF-8, one object per line); returns how many were written."""
    count = 0
    with atomic_open(path, "w") as fh:
        for sample in samples:
            fh.write(json.dumps(asdict(sample), ensure_ascii=False) + "\n")
            count += 1
    return count
