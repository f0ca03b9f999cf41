"""MELD CSV loader on small fixtures: samples, videos, encoding quirks, and each bad-input case."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from elmd_sdk.data import Turn, VideoRef, load_meld, prepare_corpus
from elmd_sdk.errors import InputError

HEADER = [
    "Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
    "Season", "Episode", "StartTime", "EndTime",
]  # fmt: skip


def meld_row(n: int, text: str, speaker: str, emotion: str, dia: int, utt: int | str) -> list[str]:
    return [str(n), text, speaker, emotion, "neutral", str(dia), str(utt), "1", "1", "00:00:01,000", "00:00:02,000"]


ROWS = [
    meld_row(1, "Hi.", "Chandler", "neutral", 0, 0),
    meld_row(2, "Nice  to see you, “friend”!", "Chandler", "joy", 0, 1),
    meld_row(3, "Oh… hi!", "Monica", "surprise", 0, 2),
    meld_row(4, "Bye.", "Chandler", "sadness", 0, 3),
    meld_row(5, "Alone.", "Joey", "neutral", 1, 0),
    meld_row(6, "Hey.", "Ross", "neutral", 2, 0),
    meld_row(7, "What?", "Rachel", "anger", 2, 1),
]


def write_csv(path: Path, header: list[str], rows: list[list[str]], encoding: str = "utf-8") -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(buffer.getvalue().encode(encoding))
    return path


def test_meld_samples(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "train_sent_emo.csv", HEADER, ROWS)
    dialogues = load_meld(path)
    assert [(d.dialogue_id, len(d.sentences)) for d in dialogues] == [("dia0", 4), ("dia1", 1), ("dia2", 2)]
    assert dialogues[0].sentences[2].line == 4 and dialogues[0].sentences[2].label == "surprise"
    samples = prepare_corpus("meld", path).samples
    first = Turn("Chandler", "Hi. Nice to see you, “friend”!", "happy")  # neutral/joy tie -> the later, joy
    assert [(s.dialogue_id, s.utterance, s.response.emotion, len(s.history)) for s in samples] == [
        ("dia0", first, "surprise", 0),
        ("dia0", Turn("Monica", "Oh… hi!", "surprise"), "sad", 1),
        ("dia2", Turn("Ross", "Hey.", "neutral"), "anger", 0),
    ]
    assert all(s.video is None for s in samples)


def test_meld_video_refs(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "dev.csv", HEADER, ROWS)
    samples = prepare_corpus("meld", path, video_root="clips").samples
    assert samples[0].video == VideoRef(str(Path("clips") / "dia0_utt1.mp4"))  # merged turn: its last clip
    assert samples[2].video == VideoRef(str(Path("clips") / "dia2_utt0.mp4"))


def test_meld_windows_encoding_quirk(tmp_path: Path) -> None:
    rows = [meld_row(1, "Don’t.", "Ross", "fear", 0, 0), meld_row(2, "Café", "Rachel", "joy", 0, 1)]
    path = write_csv(tmp_path / "cp.csv", HEADER, rows, encoding="cp1252")
    with pytest.raises(InputError) as err:
        load_meld(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 2, "Utterance")
    assert "0x92" in err.value.problem and "--encoding" in err.value.problem
    samples = prepare_corpus("meld", path, encoding="cp1252").samples
    assert (samples[0].utterance.text, samples[0].response.text) == ("Don’t.", "Café")
    mojibake = write_csv(tmp_path / "moji.csv", HEADER, [meld_row(1, "Itâ€™s", "A", "joy", 0, 0), rows[1]])
    assert load_meld(mojibake)[0].sentences[0].text == "It’s"


def test_meld_missing_column(tmp_path: Path) -> None:
    header = [h for h in HEADER if h != "Speaker"]
    path = write_csv(tmp_path / "m.csv", header, [r[:2] + r[3:] for r in ROWS])
    with pytest.raises(InputError) as err:
        load_meld(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 1, "Speaker")
    assert "missing column" in err.value.problem


@pytest.mark.parametrize(
    ("row", "field", "problem"),
    [
        (meld_row(3, "x", "A", "joy", 0, 2)[:8], "Episode", "expected 11 fields, found 8"),
        ([*meld_row(3, "x", "A", "joy", 0, 2), "extra"], "EndTime", "expected 11 fields, found 12"),
        (meld_row(3, "x", "A", "joy", 0, "two"), "Utterance_ID", "expected an integer, found 'two'"),
        (meld_row(3, "x", "", "joy", 0, 2), "Speaker", "empty value"),
        (meld_row(3, "x", "A", "joy", 0, 1), "Utterance_ID", "duplicate utterance 1 of dialogue 0"),
    ],
)
def test_meld_malformed_rows(tmp_path: Path, row: list[str], field: str, problem: str) -> None:
    path = write_csv(tmp_path / "bad.csv", HEADER, [*ROWS[:2], row])
    with pytest.raises(InputError) as err:
        load_meld(path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 4, field)
    assert problem in err.value.problem


def test_meld_broken_quoting_names_the_line(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "q.csv", HEADER, ROWS[:2])
    path.write_bytes(path.read_bytes() + b'3,"unterminated,A,joy,neutral,0,2,1,1,a,b\n')
    with pytest.raises(InputError, match=r"q\.csv:4: malformed CSV record"):
        load_meld(path)


def test_meld_unknown_label(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "l.csv", HEADER, [*ROWS[:2], meld_row(3, "x", "B", "happiness", 0, 2)])
    with pytest.raises(InputError) as err:
        prepare_corpus("meld", path)
    assert (err.value.file, err.value.line, err.value.field) == (str(path), 4, "Emotion")
    assert "'happiness' is not a known label" in err.value.problem and "allowed: joy, surprise" in err.value.problem
    with pytest.raises(InputError, match=r"yields no samples .*dropped unmapped labels 'happiness': 1") as err:
        prepare_corpus("meld", path, drop_unmapped=True)  # the only reply was dropped: nothing is left
    assert err.value.file == str(path)
