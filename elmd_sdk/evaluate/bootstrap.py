"""Bootstrap 95% confidence intervals of a report's metrics, and paired differences between results on the same samples.

Resample r of a run over n samples draws the samples ``numpy.random.default_rng(seed).integers(0, n, size=(N, n))[r]``
(with replacement). The draws depend only on the seed, n and the number of resamples N, never on the generations:
two runs on the same data and ``--limit`` resample the same samples, so on every resample two results differ only
by their generations (paired). An interval is the 2.5th and 97.5th percentiles of a metric over the resamples; a
difference is this result's metric minus the other's on each resample. Every metric is recomputed on a resample from
per-sample statistics by the report's own definitions (:mod:`elmd_sdk.evaluate.statistics`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from elmd_sdk.errors import InputError
from elmd_sdk.evaluate.report import report_generations, report_labels, scored_results
from elmd_sdk.evaluate.statistics import SampleStatistics, resampled_metrics, sample_statistics
from elmd_sdk.io import sha256_file
from elmd_sdk.metrics.options import TextMetricOptions

if TYPE_CHECKING:
    from numpy.typing import NDArray

CONFIDENCE = 95
METHOD = (
    "percentile interval: the 2.5th and 97.5th percentiles (numpy, linear) of each metric over the resamples; "
    "resample r draws samples numpy.random.default_rng(seed).integers(0, samples, size=(resamples, samples))[r] "
    "with replacement, the same for every run over the same number of samples (paired); a metric undefined on a "
    "resample (a copy rate without demonstrations) is left out there; distinct-n counts the n-grams no other "
    "reply has again for each further copy of a reply drawn more than once"
)
"""How the intervals are computed, as written into a report."""

# What two reports must agree on for their metrics to be compared: how each text metric tokenizes and counts.
_SCORING = (
    "language",
    "tokenization",
    "bleu_tokens",
    "bleu_tokenization",
    "rouge_counting",
    "rouge_tokenization",
    "meteor_synonyms",
)
_SAMPLE_FIELDS = ("dialogue_id", "utterance", "reference")


def resample_indices(seed: int, count: int, resamples: int) -> NDArray[np.int64]:
    """The samples each resample draws: (resamples, count) indices in [0, count), a function of the arguments only."""
    return np.random.default_rng(seed).integers(0, count, size=(resamples, count))


def indices_sha256(indices: NDArray[np.int64]) -> str:
    """A fingerprint of the resamples, so two reports show they were paired."""
    return hashlib.sha256(np.ascontiguousarray(indices, dtype="<i8").tobytes()).hexdigest()


def percentile_interval(values: NDArray[np.float64]) -> list[float] | None:
    """[2.5th, 97.5th] percentile of the values that are defined (not NaN); None when none is."""
    defined = values[~np.isnan(values)]
    if not defined.size:
        return None
    low, high = np.percentile(defined, [(100 - CONFIDENCE) / 2, (100 + CONFIDENCE) / 2])
    return [float(low), float(high)]


def intervals(resampled: dict[str, NDArray[np.float64]]) -> dict[str, list[float] | None]:
    """The interval of every metric from its values on the resamples (:func:`resampled_metrics`)."""
    return {key: percentile_interval(values) for key, values in resampled.items()}


def paired_differences(
    ours: tuple[dict[str, float | None], dict[str, NDArray[np.float64]]],
    theirs: tuple[dict[str, float | None], dict[str, NDArray[np.float64]]],
) -> dict[str, dict[str, Any]]:
    """Ours minus theirs for every metric both hold, each a (full-sample values, resampled values) pair on the same
    resamples: the difference on the samples, its interval, and whether the interval excludes 0."""
    out: dict[str, dict[str, Any]] = {}
    for key, values in ours[1].items():
        if key not in theirs[1]:
            continue
        ours_full, theirs_full = ours[0][key], theirs[0][key]
        interval = percentile_interval(values - theirs[1][key])
        out[key] = {
            "value": None if ours_full is None or theirs_full is None else ours_full - theirs_full,
            "interval": interval,
            "excludes_zero": interval is not None and (interval[0] > 0 or interval[1] < 0),
        }
    return out


def check_same_samples(samples: Sequence[Mapping[str, Any]], base: Mapping[str, Any], base_file: str | Path) -> None:
    """Raise an :class:`InputError` naming ``base_file`` unless ``base`` is the report of one evaluation of
    ``samples`` (generations or dicts with their fields), in order: same dialogue, utterance and reference."""
    if base["kind"] != "eval":
        raise InputError("is a Table 3 report: --compare takes the report of one evaluation", file=base_file)
    theirs = base.get("generations") or []
    if len(samples) != len(theirs):
        raise InputError(
            f"holds {len(theirs)} samples, this run {len(samples)}: compare runs on the same data and --limit",
            file=base_file,
        )
    for i, (our, their) in enumerate(zip(samples, theirs, strict=True), start=1):
        for name in _SAMPLE_FIELDS:
            if our.get(name) != their.get(name):
                raise InputError(
                    f"sample {i} differs from this run's: {their.get(name)!r} against {our.get(name)!r}",
                    file=base_file,
                    field=name,
                )


def check_comparable(report: dict[str, Any], base: dict[str, Any], base_file: str | Path) -> None:
    """Raise an :class:`InputError` naming ``base_file`` unless ``base`` is an evaluation of the same samples as
    ``report`` (:func:`check_same_samples`), scored the same way (language, labels, tokenization, counting)."""
    if report["kind"] != "eval":
        raise InputError("applies to one evaluation; Table 3's rows are compared with its full row", field="--compare")
    check_same_samples(report["generations"], base, base_file)
    for name in _SCORING:
        if report["metrics"].get(name) != base["metrics"].get(name):
            raise InputError(
                f"scored with {base['metrics'].get(name)!r}, this run with {report['metrics'].get(name)!r}",
                file=base_file,
                field=f"metrics.{name}",
            )
    labels = report_labels(base, base["metrics"], base_file)
    if labels != report_labels(report, report["metrics"], "this run"):
        raise InputError(f"scored over the emotion labels {labels}, this run over others", file=base_file)


def _statistics(report: dict[str, Any], file: str | Path) -> list[tuple[dict[str, Any], SampleStatistics]]:
    """Each scored result of a report with its per-sample statistics."""
    text_metrics = TextMetricOptions(**(report.get("settings") or {}).get("text_metrics", {}))
    return [
        (
            result,
            sample_statistics(
                report_generations(result, file),
                result["metrics"],
                report_labels(report, result["metrics"], file),
                text_metrics,
                file,
            ),
        )
        for result in scored_results(report)
    ]


def add_bootstrap(
    report: dict[str, Any],
    *,
    resamples: int,
    seed: int,
    file: str | Path,
    base: dict[str, Any] | None = None,
    base_file: str | Path | None = None,
) -> None:
    """Add intervals to every scored result of ``report`` (in place): ``intervals`` per result, and for Table 3 each
    row's difference from the full row (``vs_full``); with a ``base`` report (an evaluation of the same samples,
    read from ``base_file``) the difference from it (``compare``). ``file`` names the report in errors."""
    if resamples < 1:
        raise InputError(f"must be at least 1, got {resamples}", field="--bootstrap")
    results = _statistics(report, file)
    if not results:
        raise InputError("holds no scored result", file=file)
    count = results[0][1].count
    indices = resample_indices(seed, count, resamples)
    rows = np.concatenate([np.arange(count)[None], indices])  # row 0 draws every sample once: the report's values

    def values_of(stats: SampleStatistics) -> tuple[dict[str, float | None], dict[str, NDArray[np.float64]]]:
        values = resampled_metrics(stats, rows)
        full = {key: None if np.isnan(v[0]) else float(v[0]) for key, v in values.items()}
        return full, {key: v[1:] for key, v in values.items()}

    if base is not None and base_file is not None:
        check_comparable(report, base, base_file)
    evaluated = [(result, values_of(stats)) for result, stats in results]
    for result, (_, resampled) in evaluated:
        result["intervals"] = intervals(resampled)
    if report["kind"] == "ablations":
        full = next((values for result, values in evaluated if result["row"] == "full"), None)
        for result, values in evaluated:
            result["vs_full"] = None if full is None or result["row"] == "full" else paired_differences(values, full)
    if base is not None and base_file is not None:
        (_, base_stats), *_ = _statistics(base, base_file)
        report["compare"] = {
            "base": str(base_file),
            "base_sha256": sha256_file(base_file),
            "differences": paired_differences(evaluated[0][1], values_of(base_stats)),
        }
    report["bootstrap"] = {
        "resamples": resamples,
        "seed": seed,
        "samples": count,
        "confidence": CONFIDENCE,
        "indices_sha256": indices_sha256(indices),
        "method": METHOD,
    }
