"""Checks on text that enters elmd-sdk from a caller (chain input, chat messages, HTTP requests): one function, so
every entry point refuses the same text with the same message."""

from __future__ import annotations

from elmd_sdk.errors import InputError


def check_text(value: str, field: str) -> str:
    """``value`` unchanged, or an :class:`InputError` naming ``field`` when it cannot be encoded as UTF-8 (a lone
    surrogate such as ``"\\ud800"``, which no tokenizer takes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        problem = f"holds {value[error.start]!r} at character {error.start}, which is not valid Unicode text"
        raise InputError(f"{problem} (a lone surrogate)", field=field) from None
    return value
