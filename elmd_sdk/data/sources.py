"""Reading corpus files: decoding with located errors, CSV rows checked against a header, text clean-up."""

from __future__ import annotations

import codecs
import csv
import io
import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from pathlib import Path

from elmd_sdk.data.records import Sentence, VideoRef
from elmd_sdk.errors import InputError

_JSON_KEY = re.compile(r'"([^"\\]+)"\s*:')


def read_bytes(path: str | Path) -> bytes:
    """The bytes of a corpus file, with an InputError naming a missing or unreadable file."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror})", file=path) from None


def last_json_key(prefix: str) -> str | None:
    """The last ``"key":`` in a line prefix: names the JSON field a bad byte sits in."""
    keys = _JSON_KEY.findall(prefix)
    return keys[-1] if keys else None


def codec_name(encoding: str) -> str:
    """Python's canonical name of a text encoding; an unknown one is an InputError on ``--encoding``."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise InputError(f"unknown text encoding {encoding!r}", field="--encoding") from None


def decode_text(
    data: bytes,
    *,
    file: str | Path,
    encoding: str = "utf-8",
    field_at: Callable[[int, str], str | None] = lambda line, prefix: None,
) -> str:
    """Decode a whole file (a UTF-8 BOM is dropped); undecodable bytes or a NUL character (no text holds one; a
    binary or UTF-16 file does) raise an InputError with the line.

    ``field_at(line, prefix)`` names the field from the decoded part of the line before the bad bytes.
    """
    if codec_name(encoding) == "utf-8" and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        prefix = data[data.rfind(b"\n", 0, exc.start) + 1 : exc.start].decode(encoding, errors="replace")
        raise InputError(
            f"byte(s) 0x{data[exc.start : exc.end].hex()} at column {len(prefix) + 1} are not valid {encoding}; "
            "if the file uses another encoding, pass it with --encoding (e.g. cp1252)",
            file=file,
            line=line,
            field=field_at(line, prefix),
        ) from None
    if (nul := text.find("\x00")) != -1:
        line = text.count("\n", 0, nul) + 1
        prefix = text[text.rfind("\n", 0, nul) + 1 : nul]
        raise InputError(
            f"NUL character at column {len(prefix) + 1}: not text (a binary file, or UTF-16: pass --encoding)",
            file=file,
            line=line,
            field=field_at(line, prefix),
        )
    return text


def iter_csv_rows(
    path: str | Path, required: Sequence[str], *, encoding: str = "utf-8"
) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line, row)`` for each CSV record, ``line`` being where the record starts.

    The header must hold every ``required`` column; a record with the wrong number of fields or broken
    quoting raises an InputError naming the line and the column.
    """
    codec_name(encoding)
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))  # a long utterance is text like any other
    data = read_bytes(path)
    header_line = data.split(b"\n", 1)[0].decode(encoding, errors="replace").lstrip("\ufeff")
    header = [name.strip() for name in next(csv.reader([header_line]), [])]

    def column_at(line: int, prefix: str) -> str | None:
        index = max(len(next(csv.reader([prefix]))), 1) - 1
        return header[index] if line > 1 and index < len(header) else None

    reader = csv.reader(io.StringIO(decode_text(data, file=path, encoding=encoding, field_at=column_at)), strict=True)
    try:
        next(reader)
    except (StopIteration, csv.Error):
        raise InputError("empty file or unreadable header; expected a CSV header line", file=path, line=1) from None
    missing = [name for name in required if name not in header]
    if missing:
        raise InputError(
            f"missing column(s) {', '.join(missing)}; the header has: {', '.join(header)}",
            file=path,
            line=1,
            field=missing[0],
        )
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise InputError(f"malformed CSV record ({exc})", file=path, line=start) from None
        if not row:
            continue
        if len(row) != len(header):
            column = header[len(row)] if len(row) < len(header) else header[-1]
            raise InputError(f"expected {len(header)} fields, found {len(row)}", file=path, line=start, field=column)
        yield start, dict(zip(header, row, strict=True))


def required_cell(row: dict[str, str], column: str, *, file: str | Path, line: int) -> str:
    """A CSV cell that must not be empty (surrounding spaces removed)."""
    value = row[column].strip()
    if not value:
        raise InputError("empty value", file=file, line=line, field=column)
    return value


def int_cell(row: dict[str, str], column: str, *, file: str | Path, line: int) -> int:
    """A CSV cell holding an integer."""
    value = required_cell(row, column, file=file, line=line)
    try:
        return int(value)
    except ValueError:
        raise InputError(f"expected an integer, found {value!r}", file=file, line=line, field=column) from None


def _undo_mojibake(word: str) -> str:
    """``Itâ€™s`` -> ``It’s``: a word of UTF-8 bytes once decoded as Windows-1252, if it re-encodes cleanly."""
    if "â€" in word or "Ã" in word:
        with suppress(UnicodeError):
            return word.encode("cp1252").decode("utf-8")
    return word


def clean_text(text: str) -> str:
    """Tidy one sentence: collapse whitespace (MELD's doubled and non-breaking spaces), undo mojibake, NFC-normalise.

    The mojibake repair (:func:`_undo_mojibake`) leaves any word that does not re-encode cleanly unchanged.
    """
    return unicodedata.normalize("NFC", " ".join(_undo_mojibake(word) for word in text.split()))


def csv_sentence(row: dict[str, str], *, file: str, line: int, video: VideoRef | None = None) -> Sentence:
    """A sentence from a CSV row with ``Speaker``, ``Utterance`` and ``Emotion`` columns (MELD and CPED)."""
    return Sentence(
        speaker=required_cell(row, "Speaker", file=file, line=line),
        text=clean_text(required_cell(row, "Utterance", file=file, line=line)),
        label=row["Emotion"],
        file=file,
        line=line,
        label_field="Emotion",
        video=video,
    )
