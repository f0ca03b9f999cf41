"""The JSON report of an evaluation or a Table 3 run, written atomically with a confusion-matrix picture beside it,
and read back (its generations, to re-score them or bootstrap their metrics).

Every report starts with the same head (format and version, kind, SDK version, bundle identity, data identity,
settings); an evaluation adds its metrics, decoding settings and every generation, a Table 3 run one such entry
per row (or "not provided").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elmd_sdk import __version__
from elmd_sdk.errors import InputError
from elmd_sdk.evaluate.run import EvalResult, Generation
from elmd_sdk.evaluate.settings import EvalSettings
from elmd_sdk.io import atomic_write_json, read_json, sha256_file

if TYPE_CHECKING:
    from elmd_sdk.evaluate.ablations import AblationRow, Variant

REPORT_FORMAT = "elmd-eval-report"
REPORT_VERSION = 1


def _data_identity(data: str | Path, total: int, used: int, limit: int | None) -> dict[str, Any]:
    return {
        "path": str(data),
        "sha256": sha256_file(data),
        "samples_total": total,
        "samples_used": used,
        "limit": limit,
    }


def _result_json(result: EvalResult) -> dict[str, Any]:
    return {
        "metrics": result.metrics,
        "generation_settings": result.generation_settings,
        "generations": [asdict(g) for g in result.generations],
    }


def _report_head(
    kind: str, bundle: Mapping[str, Any] | None, data: dict[str, Any], settings: EvalSettings
) -> dict[str, Any]:
    """The fields every report starts with: format and version, kind, SDK version, bundle, data and settings."""
    return {
        "format": REPORT_FORMAT,
        "format_version": REPORT_VERSION,
        "kind": kind,
        "elmd_sdk_version": __version__,
        "bundle": dict(bundle) if bundle is not None else None,
        "data": data,
        "settings": asdict(settings),
    }


def eval_report(
    result: EvalResult,
    *,
    settings: EvalSettings,
    data: str | Path,
    samples_total: int,
    bundle: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The JSON report of one evaluation: metrics with metadata, settings, bundle identity, every generation."""
    data_identity = _data_identity(data, samples_total, len(result.generations), settings.limit)
    return {**_report_head("eval", bundle, data_identity, settings), **_result_json(result)}


def ablation_report(
    rows: Sequence[AblationRow],
    *,
    settings: EvalSettings,
    data: str | Path,
    samples_total: int,
    samples_used: int,
    bundle: Mapping[str, Any],
    variants: Sequence[Variant],
) -> dict[str, Any]:
    """The JSON report of a Table 3 run: one entry per row (metrics and generations, or "not provided")."""
    data_identity = _data_identity(data, samples_total, samples_used, settings.limit)
    return {
        **_report_head("ablations", bundle, data_identity, settings),
        "variants": {v.key: {"kind": v.kind, "path": str(v.path)} for v in variants},
        "rows": [
            {
                "row": row.key,
                "label": row.label,
                "status": row.status,
                "source": row.source,
                "note": row.note,
                **(_result_json(row.result) if row.result is not None else {"metrics": None, "generations": None}),
            }
            for row in rows
        ],
    }


def read_report(path: str | Path) -> dict[str, Any]:
    """A report written by :func:`write_report` (an evaluation or a Table 3 run), or an :class:`InputError`."""
    report = read_json(path)
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise InputError(f"not an elmd-sdk evaluation report (format {REPORT_FORMAT!r})", file=path)
    if report.get("kind") not in ("eval", "ablations"):
        raise InputError(f"unknown report kind {report.get('kind')!r} (eval or ablations)", file=path, field="kind")
    return report


def scored_results(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The parts of a report holding metrics and generations: the report itself, or each Table 3 row scored."""
    if report["kind"] == "eval":
        return [report]
    return [row for row in report.get("rows", []) if row.get("metrics") is not None]


def report_generations(result: Mapping[str, Any], file: str | Path) -> list[Generation]:
    """The generations stored in one scored result (:func:`scored_results`), as :class:`Generation` objects."""
    names = {f.name for f in fields(Generation)}
    items = result.get("generations")
    if not isinstance(items, list) or not items:
        raise InputError("holds no generations", file=file, field="generations")
    try:
        return [Generation(**{key: value for key, value in item.items() if key in names}) for item in items]
    except (AttributeError, TypeError) as error:
        raise InputError(f"a generation lacks a field or is not an object ({error})", file=file) from None


def report_labels(report: Mapping[str, Any], metrics: Mapping[str, Any], file: str | Path) -> list[str]:
    """The emotion labels a result was scored over: its metrics' (reports since bootstrap intervals), else the
    bundle's (older reports: the chain scores over its bundle's labels)."""
    labels = metrics.get("labels") or (report.get("bundle") or {}).get("labels")
    if not labels:
        raise InputError("records no emotion labels (metrics.labels or bundle.labels)", file=file)
    return list(labels)


def write_report(path: str | Path, report: Mapping[str, Any]) -> list[Path]:
    """Write a report as JSON atomically (temporary file, then rename), and beside it a confusion-matrix PNG and a
    reliability-diagram PNG of each scored result (``REPORT.confusion.png`` and ``REPORT.reliability.png``, or
    ``REPORT.ROW.*.png`` per Table 3 row); returns the paths."""
    from elmd_sdk.metrics.calibration import write_reliability_png
    from elmd_sdk.metrics.confusion_plot import write_confusion_png

    path = Path(path)
    atomic_write_json(path, report)
    written = [path]
    results = [("", report)] if "metrics" in report else [(f".{row['row']}", row) for row in report.get("rows", [])]
    for suffix, result in results:
        confusion = (result.get("metrics") or {}).get("emotion_confusion")
        if confusion is not None:
            title = f"response emotion{' ' + result['label'] if suffix else ''} (gold rows, predicted columns)"
            written.append(write_confusion_png(confusion, path.with_name(f"{path.stem}{suffix}.confusion.png"), title))
        diagrams = (result.get("metrics") or {}).get("reliability")
        if diagrams:
            written.append(write_reliability_png(diagrams, path.with_name(f"{path.stem}{suffix}.reliability.png")))
    return written
