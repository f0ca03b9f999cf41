"""Score the generations stored in a report again, with the report's own settings (``elmd-sdk eval --rescore``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from elmd_sdk import __version__
from elmd_sdk.errors import InputError
from elmd_sdk.evaluate.report import report_generations, report_labels, scored_results
from elmd_sdk.evaluate.run import score
from elmd_sdk.evaluate.statistics import BOOTSTRAP_METRICS, metric_value
from elmd_sdk.io import sha256_file
from elmd_sdk.metrics.options import TextMetricOptions


def rescore_report(report: dict[str, Any], file: str | Path) -> list[str]:
    """Recompute the metrics of every scored result of ``report`` (read from ``file``) from its stored generations,
    in place, with the code ``elmd-sdk eval`` scores with and the report's language, labels, METEOR synonyms and
    text-metric options; intervals of an earlier bootstrap are dropped. Returns the printed values that changed,
    one ``KEY: OLD -> NEW`` line each (a WordNet missing here, another SDK version)."""
    settings = report.get("settings") or {}
    try:
        text_metrics = TextMetricOptions(**(settings.get("text_metrics") or {}))
    except TypeError as error:
        raise InputError(
            f"unreadable text-metric options ({error})", file=file, field="settings.text_metrics"
        ) from None
    changed: list[str] = []
    for result in scored_results(report):
        old = result["metrics"]
        new = score(
            report_generations(result, file),
            old.get("language", ""),
            report_labels(report, old, file),
            meteor_synonyms=bool(settings.get("meteor_synonyms", True)),
            text_metrics=text_metrics,
        )
        where = f"{result['label']}: " if "label" in result else ""
        for key in (*BOOTSTRAP_METRICS, "meteor_synonyms"):
            before, after = metric_value(old, key), metric_value(new, key)
            if before != after:
                changed.append(f"{where}{key}: {before} -> {after}")
        result["metrics"] = new
        for stale in ("intervals", "vs_full"):
            result.pop(stale, None)
    for stale in ("bootstrap", "compare"):
        report.pop(stale, None)
    report["rescored_from"] = {"path": str(file), "sha256": sha256_file(file), "elmd_sdk_version": __version__}
    return changed
