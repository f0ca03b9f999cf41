"""CPED loader: ``*_split.csv`` files (40 Chinese TV series; one row per sentence; no videos here)."""

from __future__ import annotations

from pathlib import Path

from elmd_sdk.data.records import Dialogue, Sentence
from elmd_sdk.data.sources import csv_sentence, iter_csv_rows, required_cell

CPED_COLUMNS: tuple[str, ...] = ("Dialogue_ID", "Speaker", "Emotion", "Utterance")
"""The columns the loader needs; ``TV_ID`` (the series) is read where present; utterance IDs, personality, scene,
face and act are ignored."""


def load_cped(path: str | Path, *, encoding: str = "utf-8") -> list[Dialogue]:
    """Read a CPED CSV into dialogues keyed by its ``Dialogue_ID`` (e.g. ``32_000``), sentences in file order; a
    dialogue's show is the ``TV_ID`` of its first row (e.g. ``32``), where the file has that column."""
    file = str(path)
    dialogues: dict[str, list[Sentence]] = {}
    shows: dict[str, str | None] = {}
    for line, row in iter_csv_rows(path, CPED_COLUMNS, encoding=encoding):
        sentence = csv_sentence(row, file=file, line=line)
        dialogue_id = required_cell(row, "Dialogue_ID", file=file, line=line)
        dialogues.setdefault(dialogue_id, []).append(sentence)
        shows.setdefault(dialogue_id, row.get("TV_ID", "").strip() or None)
    return [Dialogue(dialogue_id, sentences, shows[dialogue_id]) for dialogue_id, sentences in dialogues.items()]
