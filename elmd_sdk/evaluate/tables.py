"""A report printed as rich tables: an evaluation's scores, Table 3's rows, their intervals and differences."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from elmd_sdk.evaluate.statistics import metric_value

_COLUMNS = (
    ("BLEU-2", "bleu_2"),
    ("BLEU-4", "bleu_4"),
    ("METEOR", "meteor"),
    ("ROUGE-1", "rouge_1"),
    ("ROUGE-L", "rouge_l"),
    ("emo acc", "emotion_accuracy"),
    ("emo F1", "emotion_macro_f1"),
)
# Table 3 prints BLEU-4, METEOR and ROUGE-L; the emotion scores are added (every metric is in the JSON).
_ABLATION_COLUMNS = tuple(c for c in _COLUMNS if c[1] not in ("bleu_2", "rouge_1"))
_NAMES = {
    **{key: header for header, key in _COLUMNS},
    "emotion_weighted_f1": "emo weighted F1",
    "distinct_1": "distinct-1",
    "distinct_2": "distinct-2",
    "copy_rate": "copy rate %",
    "template_leak_rate": "template leaks %",
}
_GROUPS = {
    "emotion_baselines.majority": "majority baseline",
    "emotion_baselines.demonstration": "demonstration e'",
    "utterance_emotion": "utterance emo",
}
_SCORES = {"emotion_accuracy": "acc", "emotion_macro_f1": "F1", "emotion_weighted_f1": "weighted F1"}


def _name(key: str) -> str:
    """How a metric's dotted key is printed."""
    group, _, score = key.rpartition(".")
    return f"{_GROUPS[group]} {_SCORES[score]}" if group else _NAMES.get(key, key)


def _cell(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def _with_interval(value: Any, interval: Sequence[float] | None, sep: str = " ") -> str:
    """``value [lo, hi]`` (the value alone where there is no interval)."""
    return _cell(value) if interval is None else f"{_cell(value)}{sep}[{interval[0]:.2f}, {interval[1]:.2f}]"


def _difference(entry: Mapping[str, Any] | None, sep: str = " ", *, star: bool = True) -> str:
    """``+d [lo, hi]``, starred (``star``) where the interval excludes 0."""
    if entry is None or entry["value"] is None:
        return "-"
    interval = entry["interval"]
    text = f"{entry['value']:+.2f}" + ("" if interval is None else f"{sep}[{interval[0]:+.2f}, {interval[1]:+.2f}]")
    return text + (" *" if star and entry["excludes_zero"] else "")


def _caption(metrics: Mapping[str, Any], bootstrap: Mapping[str, Any] | None = None) -> str:
    synonyms = "with WordNet synonyms" if metrics.get("meteor_synonyms") else "without synonyms (no offline WordNet)"
    caption = (
        f"x100, {metrics['count']} samples; tokens: {metrics['tokenization']}; BLEU on {metrics['bleu_tokens']}; "
        f"ROUGE-1 {metrics['rouge_counting']} counts; METEOR {synonyms}"
    )
    if bootstrap is not None:
        caption += (
            f"; [{bootstrap['confidence']}% interval] over {bootstrap['resamples']} paired resamples of the samples "
            f"(seed {bootstrap['seed']})"
        )
    return caption


def _reply_lines(metrics: Mapping[str, Any]) -> str:
    """Reply checks, the emotion baselines and the utterance emotion, one line each (those that were scored)."""
    lines = [
        f"replies: distinct-1 {_cell(metrics.get('distinct_1'))}, distinct-2 {_cell(metrics.get('distinct_2'))}, "
        f"copy rate {_cell(metrics.get('copy_rate'))}%, template leaks {_cell(metrics.get('template_leak_rate'))}%"
    ]
    if baselines := metrics.get("emotion_baselines"):
        majority, demo = baselines["majority"], baselines["demonstration"]
        lines.append(
            f"emotion baselines on the same samples: majority ({majority['label']}) acc "
            f"{_cell(majority['emotion_accuracy'])} F1 {_cell(majority['emotion_macro_f1'])}; demonstration e' acc "
            f"{_cell(demo['emotion_accuracy'])} F1 {_cell(demo['emotion_macro_f1'])}"
        )
    if utterance := metrics.get("utterance_emotion"):
        lines.append(
            f"utterance emotion: acc {_cell(utterance['emotion_accuracy'])}, "
            f"weighted F1 {_cell(utterance['emotion_weighted_f1'])}"
        )
    if "mid_sentence_rate" in metrics:
        lines.append(
            f"turn checks: echo {_cell(metrics.get('echo_rate'))}%, mid-sentence "
            f"{_cell(metrics.get('mid_sentence_rate'))}%, asides {_cell(metrics.get('aside_rate'))}%, contradicting "
            f"the user {_cell(metrics.get('contradiction_rate'))}%"
        )
    if diagrams := metrics.get("reliability"):
        shown = ", ".join(f"{name} {_cell(diagram['ece'])}" for name, diagram in diagrams.items())
        lines.append(f"expected calibration error (x100): {shown}")
    return "\n".join(lines)


def _titles(report: Mapping[str, Any]) -> tuple[str, str]:
    """The bundle's name and the data file's name."""
    return (report.get("bundle") or {}).get("name", "?"), Path(report["data"]["path"]).name


def _print_eval(console: Console, report: Mapping[str, Any]) -> None:
    """One evaluation: its scores (each with its interval where bootstrapped), then its difference from a base."""
    metrics, intervals = report["metrics"], report.get("intervals")
    name, data = _titles(report)
    if intervals is None:
        table = Table(title=f"{name} on {data}", caption=_caption(metrics), box=box.SIMPLE_HEAD)
        table.add_column("model", no_wrap=True)
        for header, _ in _COLUMNS:
            table.add_column(header, justify="right", no_wrap=True)
        table.add_row(name, *(_cell(metrics.get(key)) for _, key in _COLUMNS))
        console.print(table)
        console.print(_reply_lines(metrics), highlight=False)
        return
    table = Table(title=f"{name} on {data}", caption=_caption(metrics, report["bootstrap"]), box=box.SIMPLE_HEAD)
    table.add_column("metric", no_wrap=True)
    table.add_column("value [95% CI]", justify="right", no_wrap=True)
    for key, interval in intervals.items():
        table.add_row(_name(key), _with_interval(metric_value(metrics, key), interval))
    console.print(table)
    if compare := report.get("compare"):
        base = Path(compare["base"]).name
        table = Table(
            title=f"difference vs {base}",
            caption="this run minus the base on the same resamples",
            box=box.SIMPLE_HEAD,
        )
        table.add_column("metric", no_wrap=True)
        table.add_column("this - base [95% CI]", justify="right", no_wrap=True)
        table.add_column("excludes 0", no_wrap=True)
        for key, entry in compare["differences"].items():
            table.add_row(_name(key), _difference(entry, star=False), "yes" if entry["excludes_zero"] else "no")
        console.print(table)


def _print_ablations(console: Console, report: Mapping[str, Any]) -> None:
    """Table 3 (rows without inputs say "not provided"; each value with its interval where bootstrapped), each row's
    difference from the full row, then each row's source and caveat."""
    rows = report["rows"]
    bootstrap = report.get("bootstrap")
    sep = "\n" if bootstrap else " "
    name, data = _titles(report)
    scored = next((row["metrics"] for row in rows if row["metrics"] is not None), None)
    table = Table(
        title=f"Ablations (Table 3) of {name} on {data}",
        caption=_caption(scored, bootstrap) if scored else None,
        box=box.SIMPLE_HEAD,
    )
    table.add_column("model", no_wrap=True)
    for header, _ in _ABLATION_COLUMNS:  # intervals wrap where the terminal is too narrow for them
        table.add_column(header, justify="right", no_wrap=bootstrap is None)
    table.add_column("status", no_wrap=True)
    for row in rows:
        metrics, intervals = row["metrics"] or {}, row.get("intervals") or {}
        cells = (_with_interval(metrics.get(key), intervals.get(key), sep) for _, key in _ABLATION_COLUMNS)
        table.add_row(row["label"], *cells, row["status"])
    console.print(table)
    compared = [row for row in rows if row.get("vs_full")]
    if compared:
        full = next(row["label"] for row in rows if row["row"] == "full")
        table = Table(
            title=f"difference vs {full}",
            caption="each row minus the full row on the same resamples; * the 95% interval excludes 0",
            box=box.SIMPLE_HEAD,
        )
        table.add_column("model", no_wrap=True)
        for header, _ in _ABLATION_COLUMNS:
            table.add_column(header, justify="right")
        for row in compared:
            table.add_row(row["label"], *(_difference(row["vs_full"].get(key), sep) for _, key in _ABLATION_COLUMNS))
        console.print(table)
    for row in rows:
        detail = "; ".join(part for part in (row["source"], row["note"]) if part)
        console.print(f"{row['label']}: {detail}", highlight=False)


def print_report(report: Mapping[str, Any]) -> None:
    """Print an evaluation or Table 3 report (:mod:`elmd_sdk.evaluate.report`) as tables."""
    console = Console()
    if report["kind"] == "eval":
        _print_eval(console, report)
    else:
        _print_ablations(console, report)
