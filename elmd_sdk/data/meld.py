"""MELD loader: ``*_sent_emo.csv`` files (Friends; one row per sentence, videos as ``dia{D}_utt{U}.mp4``)."""

from __future__ import annotations

from pathlib import Path

from elmd_sdk.data.records import Dialogue, Sentence, VideoRef
from elmd_sdk.data.sources import csv_sentence, int_cell, iter_csv_rows
from elmd_sdk.errors import InputError

MELD_COLUMNS: tuple[str, ...] = ("Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID")
"""The columns the loader reads; others (Sentiment, Season, times, ...) are ignored."""


def load_meld(path: str | Path, *, video_root: str | Path | None = None, encoding: str = "utf-8") -> list[Dialogue]:
    """Read a MELD CSV into dialogues ``dia{Dialogue_ID}``, sentences in file order.

    With ``video_root``, each sentence refers to its whole clip ``<video_root>/dia{D}_utt{U}.mp4``.
    Text is tidied with :func:`~elmd_sdk.data.sources.clean_text` (MELD's mojibake and spacing).
    """
    file = str(path)
    dialogues: dict[int, list[Sentence]] = {}
    seen: set[tuple[int, int]] = set()
    for line, row in iter_csv_rows(path, MELD_COLUMNS, encoding=encoding):
        dia = int_cell(row, "Dialogue_ID", file=file, line=line)
        utt = int_cell(row, "Utterance_ID", file=file, line=line)
        if (dia, utt) in seen:
            raise InputError(f"duplicate utterance {utt} of dialogue {dia}", file=file, line=line, field="Utterance_ID")
        seen.add((dia, utt))
        video = VideoRef(str(Path(video_root) / f"dia{dia}_utt{utt}.mp4")) if video_root is not None else None
        sentence = csv_sentence(row, file=file, line=line, video=video)
        dialogues.setdefault(dia, []).append(sentence)
    return [Dialogue(f"dia{dia}", sentences) for dia, sentences in dialogues.items()]
