"""The background B of each sample (paper 3.1: a summary of the show) from a JSON mapping file.

The file maps a dialogue id (``dia3`` in MELD, ``anjia_1`` in M3ED, ``32_000`` in CPED, any id in native JSONL) or
a show (M3ED's show key such as ``anjia``, CPED's ``TV_ID`` such as ``32``) to a background text; a dialogue's own
entry wins over its show's. Every key must name a dialogue or a show of the input, so a misspelt key is an error
rather than a background silently left out.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elmd_sdk.data.records import Sample
from elmd_sdk.data.sources import decode_text, read_bytes
from elmd_sdk.errors import InputError


@dataclass(frozen=True)
class Backgrounds:
    """Background texts keyed by dialogue id or show, and the file they came from (named in errors)."""

    texts: dict[str, str]
    file: str

    def lookup(self, dialogue_id: str, show: str | None) -> str | None:
        """The dialogue's own background, else its show's, else None."""
        if dialogue_id in self.texts:
            return self.texts[dialogue_id]
        return self.texts.get(show) if show is not None else None

    def apply(self, sample: Sample) -> Sample:
        """A native sample (no show) with its dialogue's background, or unchanged if the file gives it none."""
        text = self.texts.get(sample.dialogue_id)
        return dataclasses.replace(sample, background=text) if text is not None else sample

    def check_keys(self, dialogue_ids: Iterable[str], shows: Iterable[str | None] = ()) -> None:
        """Raise :class:`InputError` naming the first key that is neither one of ``dialogue_ids`` nor of ``shows``."""
        known = {*dialogue_ids, *(show for show in shows if show is not None)}
        for key in self.texts:
            if key not in known:
                raise InputError("names no dialogue id or show of the input", file=self.file, field=key)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads``' object hook: a key given twice would silently keep only its last text."""
    keys = [key for key, _ in pairs]
    if duplicate := next((key for key in keys if keys.count(key) > 1), None):
        raise ValueError(duplicate)
    return dict(pairs)


def read_backgrounds(path: str | Path) -> Backgrounds:
    """Read a JSON object ``{dialogue id or show: background text}`` (UTF-8); bad JSON, a key given twice or a
    value that is not a non-empty string is an :class:`InputError` naming the file (and the line or key)."""
    text = decode_text(read_bytes(path), file=path)
    try:
        data = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON ({exc.msg} at column {exc.colno})", file=path, line=exc.lineno) from None
    except ValueError as exc:
        raise InputError("given twice", file=path, field=str(exc)) from None
    if not isinstance(data, dict):
        raise InputError("expected a JSON object {dialogue id or show: background text}", file=path)
    for key, value in data.items():
        if not isinstance(value, str) or not value.strip():
            found = json.dumps(value, ensure_ascii=False)[:40]
            raise InputError(f"expected a non-empty background text, found {found}", file=path, field=key)
    return Backgrounds(texts=data, file=str(path))
