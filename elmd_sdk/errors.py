"""Exceptions raised by elmd-sdk; input errors name the file, the line or row, and the field."""

from __future__ import annotations

from pathlib import Path


class ElmdError(Exception):
    """Base class of every error elmd-sdk raises on purpose."""


class InputError(ElmdError, ValueError):
    """Bad user input (a data file, a video, a model or index directory), located as precisely as known.

    The message reads ``FILE:LINE: field 'FIELD': PROBLEM`` with the parts that are known, so a user can
    jump straight to the offending place.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.problem = problem
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        where = ""
        if self.file is not None:
            where = self.file if line is None else f"{self.file}:{line}"
        elif line is not None:
            where = f"line {line}"
        parts = [p for p in (where, f"field '{field}'" if field else "") if p]
        super().__init__(": ".join([*parts, problem]))


class MismatchError(ElmdError, ValueError):
    """Saved weights or an index that were made for another model, encoder or configuration."""


def input_error(error: Exception) -> InputError:
    """A pydantic ``ValidationError`` from building an SDK object as an :class:`InputError` naming the first bad
    field (``k``, ``max_new_tokens``, ...) and saying what is wrong with it."""
    details = error.errors() if hasattr(error, "errors") else []
    if not details:
        return InputError(str(error))
    first = details[0]
    field = ".".join(str(part) for part in first.get("loc", ())) or None
    return InputError(f"{first.get('msg', 'invalid value')}, got {first.get('input')!r}", field=field)
