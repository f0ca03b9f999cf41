"""Per-sample statistics of one result's generations, and every reported metric recomputed from them on any set of
resamples of the samples (the bootstrap of :mod:`elmd_sdk.evaluate.bootstrap`).

The statistics are computed once; a resample then costs array arithmetic, and each metric goes through the
definition the report uses (:mod:`elmd_sdk.metrics`), so the resample that draws every sample once gives exactly
the report's values:

* BLEU-2/4, METEOR, ROUGE-1/L: each pair's score (``pair_scores``), averaged by ``mean_rows_x100``;
* emotion accuracy, macro- and weighted F1 (the response's, both baselines', the utterance's): the resample's
  confusion counts, scored by ``scores_from_confusion``; the majority baseline predicts the resample's own majority
  label (``majority_label``);
* copy and template-leak rates: per-sample flags, counted into ``rate_x100``;
* distinct-1/2: per-sample n-gram counts into ``distinct_ratio``. A resample draws some replies more than once; each
  copy's own n-grams (those no other reply has) then count as new n-grams again, as a further reply of that kind
  would bring its own, while n-grams that several replies share count once however often they are drawn. Counting
  a copy's n-grams as seen would make every resample far less diverse than the data: on 300 MELD dev utterances,
  distinct-2 79.6 with resamples between 49 and 58.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from elmd_sdk.errors import InputError
from elmd_sdk.evaluate.run import Generation, reply_tokens
from elmd_sdk.metrics.average import mean_rows_x100
from elmd_sdk.metrics.emotion import majority_label, scores_from_confusion
from elmd_sdk.metrics.options import TextMetricOptions
from elmd_sdk.metrics.reply import copy_flags, distinct_ratio, leaks_template, ngrams, rate_x100
from elmd_sdk.metrics.score import TEXT_METRICS, pair_scores

if TYPE_CHECKING:
    from numpy.typing import NDArray

_EMOTION = ("emotion_accuracy", "emotion_macro_f1", "emotion_weighted_f1")
# The emotion scores of a report, by where they sit in its metrics: key prefix -> the scores kept there.
_EMOTION_GROUPS: dict[str, tuple[str, ...]] = {
    "": _EMOTION,
    "emotion_baselines.majority.": _EMOTION,
    "emotion_baselines.demonstration.": _EMOTION,
    "utterance_emotion.": ("emotion_accuracy", "emotion_weighted_f1"),
}
_DISTINCT = (1, 2)

BOOTSTRAP_METRICS: tuple[str, ...] = (
    *TEXT_METRICS,
    *_EMOTION,
    *(f"distinct_{n}" for n in _DISTINCT),
    "copy_rate",
    "template_leak_rate",
    *(prefix + key for prefix, keys in _EMOTION_GROUPS.items() if prefix for key in keys),
)
"""Every metric a report prints that is a function of the samples, as dotted keys into its metrics."""


def metric_value(metrics: Mapping[str, Any], key: str) -> Any:
    """A metric by its dotted key (``emotion_baselines.majority.emotion_accuracy``); None where it is absent."""
    value: Any = metrics
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _drawn(draws: NDArray[np.float64], codes: NDArray[np.intp], size: int) -> NDArray[np.int64]:
    """How often each code in [0, size) is drawn in each resample: (N, n) draws, (n,) codes -> (N, size)."""
    onehot = np.zeros((codes.size, size))
    onehot[np.arange(codes.size), codes] = 1.0
    return np.rint(draws @ onehot).astype(np.int64)


@dataclass(frozen=True)
class _Distinct:
    """distinct-n's counts per reply (see the module docstring)."""

    totals: NDArray[np.float64]  # (n,) n-grams of each reply
    own: NDArray[np.float64]  # (n,) distinct n-grams that no other reply has
    owners: NDArray[np.intp]  # (pairs,) the reply of each (reply, shared n-gram) pair, grouped by n-gram
    starts: NDArray[np.intp]  # (shared n-grams,) where each shared n-gram's group starts in ``owners``

    @classmethod
    def of(cls, replies: Sequence[Sequence[str]], n: int) -> _Distinct:
        grams = [ngrams(tokens, n) for tokens in replies]
        holders: dict[tuple[str, ...], list[int]] = {}
        for i, reply in enumerate(grams):
            for gram in set(reply):
                holders.setdefault(gram, []).append(i)
        own = np.zeros(len(replies))
        shared = []
        for held in holders.values():
            if len(held) == 1:
                own[held[0]] += 1
            else:
                shared.append(held)
        return cls(
            totals=np.array([len(reply) for reply in grams], dtype=np.float64),
            own=own,
            owners=np.array([i for held in shared for i in held], dtype=np.intp),
            starts=np.cumsum([0, *(len(held) for held in shared)], dtype=np.intp)[:-1],
        )

    def ratios(self, draws: NDArray[np.float64]) -> list[float]:
        """distinct-n of each resample, (N, n) draws -> N values."""
        types = np.rint(draws @ self.own).astype(np.int64)
        if self.starts.size:
            types += np.logical_or.reduceat(draws[:, self.owners] > 0, self.starts, axis=1).sum(axis=1)
        totals = np.rint(draws @ self.totals).astype(np.int64)
        return [distinct_ratio(t, total) for t, total in zip(types.tolist(), totals.tolist(), strict=True)]


@dataclass(frozen=True)
class _Emotions:
    """The gold and predicted labels one group of emotion scores compares."""

    gold: NDArray[np.intp]  # (n,) index of each gold label
    pred: NDArray[np.intp] | None  # (n,) confusion column of each prediction (labels, then "none"); None: majority

    def scores(self, draws: NDArray[np.float64], labels: Sequence[str]) -> list[dict[str, Any]]:
        """The emotion scores of each resample, (N, n) draws -> N dicts of ``scores_from_confusion``."""
        columns = len(labels) + 1
        if self.pred is not None:
            confusion = _drawn(draws, self.gold * columns + self.pred, len(labels) * columns)
            return [scores_from_confusion(c, labels) for c in confusion.reshape(-1, len(labels), columns).tolist()]
        out = []
        for support in _drawn(draws, self.gold, len(labels)).tolist():  # always the resample's majority label
            m = list(labels).index(majority_label(support, labels))
            out.append(scores_from_confusion([[c if j == m else 0 for j in range(columns)] for c in support], labels))
        return out


@dataclass(frozen=True)
class SampleStatistics:
    """What every metric of one result needs from each sample (see the module docstring)."""

    labels: tuple[str, ...]
    keys: tuple[str, ...]  # the metrics the result reports, in BOOTSTRAP_METRICS' order
    pairs: dict[str, NDArray[np.float64]]  # TEXT_METRICS -> (n,) each pair's score (a fraction)
    distinct: dict[int, _Distinct]  # n -> distinct-n's counts
    copies: NDArray[np.float64]  # (n, 2): the reply had a demonstration, the reply copies it
    leaks: NDArray[np.float64]  # (n,) the reply carries template text
    emotions: dict[str, _Emotions]  # key prefix (_EMOTION_GROUPS) -> the labels it scores

    @property
    def count(self) -> int:
        """The number of samples."""
        return int(self.leaks.size)


def sample_statistics(
    generations: Sequence[Generation],
    metrics: Mapping[str, Any],
    labels: Sequence[str],
    text_metrics: TextMetricOptions,
    file: str | Path,
) -> SampleStatistics:
    """The statistics of ``generations`` for the metrics that ``metrics`` (their report's) holds, computed as they
    were: same language, labels, METEOR synonyms and text-metric options. ``file`` names the report in errors."""
    language = metrics["language"]
    synonyms = bool(metrics.get("meteor_synonyms"))
    hyps = [g.response for g in generations]
    scores, method = pair_scores(
        hyps, [g.reference for g in generations], language, meteor_synonyms=synonyms, text_metrics=text_metrics
    )
    if method["meteor_synonyms"] != synonyms:
        raise InputError("METEOR was scored with WordNet synonyms; no offline WordNet is installed here", file=file)
    replies, demonstrations = reply_tokens(generations, language)
    flags = copy_flags(replies, demonstrations)
    index: dict[str | None, int] = {label: j for j, label in enumerate(labels)}

    def codes(names: Sequence[str | None]) -> NDArray[np.intp]:
        """Label indices, the "none" column for a name outside the labels (a gold name is always a label: the
        report scored it)."""
        return np.array([index.get(name, len(labels)) for name in names], dtype=np.intp)

    emotions: dict[str, _Emotions] = {}
    if metrics.get("emotion_accuracy") is not None:
        gold = codes([g.reference_emotion for g in generations])
        emotions[""] = _Emotions(gold, codes([g.emotion for g in generations]))
        if metrics.get("emotion_baselines"):
            demo = [(g.demonstration or {}).get("response_emotion") for g in generations]
            emotions["emotion_baselines.majority."] = _Emotions(gold, None)
            emotions["emotion_baselines.demonstration."] = _Emotions(gold, codes(demo))
    if metrics.get("utterance_emotion"):
        utterance_gold = codes([g.reference_utterance_emotion for g in generations])
        emotions["utterance_emotion."] = _Emotions(utterance_gold, codes([g.utterance_emotion for g in generations]))
    return SampleStatistics(
        labels=tuple(labels),
        keys=tuple(key for key in BOOTSTRAP_METRICS if metric_value(metrics, key) is not None),
        pairs={key: np.asarray(values, dtype=np.float64) for key, values in scores.items()},
        distinct={n: _Distinct.of(replies, n) for n in _DISTINCT},
        copies=np.array([(flag is not None, flag is True) for flag in flags], dtype=np.float64),
        leaks=np.array([leaks_template(h) for h in hyps], dtype=np.float64),
        emotions=emotions,
    )


def resampled_metrics(stats: SampleStatistics, indices: NDArray[np.int64]) -> dict[str, NDArray[np.float64]]:
    """Every metric of ``stats.keys`` on each resample: (N, n) sample indices -> key -> (N,) values, NaN where a
    resample leaves a metric undefined (a copy rate when no drawn reply had a demonstration)."""
    count = stats.count
    rows = indices.shape[0]
    drawn = np.bincount((indices + count * np.arange(rows)[:, None]).ravel(), minlength=rows * count)
    draws = drawn.reshape(rows, count).astype(np.float64)  # (N, n): how often each sample is drawn
    values: dict[str, Any] = {key: mean_rows_x100(stats.pairs[key][indices]) for key in TEXT_METRICS}
    for n, distinct in stats.distinct.items():
        values[f"distinct_{n}"] = distinct.ratios(draws)
    had, copied = np.rint(draws @ stats.copies).astype(np.int64).T.tolist()
    values["copy_rate"] = [rate_x100(hits, total) for hits, total in zip(copied, had, strict=True)]
    leaks = np.rint(draws @ stats.leaks).astype(np.int64).tolist()
    values["template_leak_rate"] = [rate_x100(hits, count) for hits in leaks]
    for prefix, emotions in stats.emotions.items():
        scored = emotions.scores(draws, stats.labels)
        for key in _EMOTION_GROUPS[prefix]:
            values[prefix + key] = [scores[key] for scores in scored]
    return {key: np.array([np.nan if v is None else v for v in values[key]], dtype=np.float64) for key in stats.keys}
