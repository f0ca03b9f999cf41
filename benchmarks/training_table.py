"""The "Does training help?" table from a ``benchmarks/training_evidence.sh OUT_DIR`` run (README).

Reads ``OUT_DIR/table.json`` (the ``elmd-sdk eval --ablations --bootstrap`` report: ours, w/o ERM, untuned,
untuned w/o ERM on the same samples, paired resamples; ``--table table_bc.json``: the same rows, each calibrated on
the validation part; ``--table table_raw.json``: ours and w/o ERM without emotion calibration) and ``OUT_DIR/bundle``
(``training.json``, ``metrics.jsonl``), and prints as Markdown: the training run
(steps, wall-clock from its metrics log, the validation curve, the weights kept), every metric of every row with its
95% interval, each row minus ours with its interval (a difference whose interval excludes 0 is marked), and the
predicted emotion distribution of each row next to the gold one.

Run: ``.venv/bin/python benchmarks/training_table.py OUT_DIR [--table table_raw.json]``
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

from _common import training_seconds

from elmd_sdk.trainers.metrics_log import METRICS_FILE, read_metrics

METRICS = (
    ("BLEU-2", "bleu_2"),
    ("BLEU-4", "bleu_4"),
    ("METEOR", "meteor"),
    ("ROUGE-1", "rouge_1"),
    ("ROUGE-L", "rouge_l"),
    ("emotion acc", "emotion_accuracy"),
    ("emotion macro-F1", "emotion_macro_f1"),
    ("distinct-2", "distinct_2"),
    ("copy rate %", "copy_rate"),
)


def _value(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"  # copy rate: no demonstration without retrieval


def _interval(values: list[float] | None) -> str:
    return "" if not values else f" [{values[0]:.2f}, {values[1]:.2f}]"


def training_summary(bundle: Path) -> None:
    """Steps, wall-clock between the first and last metrics line, validations, and the weights the bundle kept."""
    log = json.loads((bundle / "training.json").read_text())
    lines = read_metrics(bundle / METRICS_FILE)
    _, seconds = training_seconds(lines, 16)  # batch 16
    print(f"training: {log['global_step']} optimizer steps of batch 16, kept {log['kept']}")
    print(
        f"  metrics log spans {(lines[-1]['time'] - lines[0]['time']) / 60:.1f} min from step {lines[0]['step']} "
        f"(plus the first interval and start-up); training steps alone {seconds / 60:.1f} min, "
        f"{seconds / log['global_step']:.2f} s/step"
    )
    print(
        "  validation: "
        + ", ".join(
            f"step {m['step']}: loss {m['loss']:.3f} acc {100 * m['accuracy']:.1f} macro-F1 {100 * m['macro_f1']:.1f}"
            + (
                f" (raw choice {100 * m['raw_accuracy']:.1f} / {100 * m['raw_macro_f1']:.1f})"
                if "raw_macro_f1" in m
                else ""
            )
            for m in lines
            if m["kind"] == "valid"
        )
    )
    losses = ", ".join(f"{m['loss']:.2f}" for m in lines if m["kind"] == "train")
    print(f"  training loss per logging interval: {losses}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path, help="the OUT_DIR of benchmarks/training_evidence.sh")
    p.add_argument(
        "--table",
        default="table.json",
        help="the eval report in OUT_DIR to print (table_bc.json: every row calibrated on the validation part; "
        "table_raw.json: without emotion calibration)",
    )
    args = p.parse_args()
    training_summary(args.out / "bundle")
    report = json.loads((args.out / args.table).read_text())
    rows: list[dict[str, Any]] = [r for r in report["rows"] if r.get("metrics")]
    boot = report.get("bootstrap", {})
    print(
        f"\n{boot.get('samples')} MELD dev samples, {boot.get('resamples')} paired bootstrap resamples (seed "
        f"{boot.get('seed')}), 95% percentile intervals; x100\n"
    )
    print("| metric | " + " | ".join(r["label"] for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for name, key in METRICS:
        cells = [_value(r["metrics"].get(key)) + _interval((r.get("intervals") or {}).get(key)) for r in rows]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nours minus each row (paired; * = the interval excludes 0):\n")
    others = [r for r in rows if r["row"] != "full"]
    print("| metric | " + " | ".join(f"ours - {r['label']}" for r in others) + " |")
    print("|---|" + "---|" * len(others))
    for name, key in METRICS:
        cells = []
        for r in others:
            d = (r.get("vs_full") or {}).get(key)  # the row minus ours: negated
            if d is None or d["value"] is None:
                cells.append("")
                continue
            lo, hi = d["interval"]
            cells.append(f"{-d['value']:+.2f} [{-hi:+.2f}, {-lo:+.2f}]{' *' if d['excludes_zero'] else ''}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\npredicted response emotions (gold first):")
    gold = Counter(g["reference_emotion"] for g in rows[0]["generations"])
    print(f"  gold: {dict(gold.most_common())}")
    baselines = rows[0]["metrics"]["emotion_baselines"]  # the eval's baselines on the same samples
    named = (("majority class", baselines["majority"]), ("demonstration's e'", baselines["demonstration"]))
    shown = (f"{name} {b['emotion_accuracy']:.1f} / {b['emotion_macro_f1']:.1f}" for name, b in named)
    print("  baselines acc / macro-F1: " + ", ".join(shown))
    for r in rows:
        print(f"  {r['label']}: {dict(Counter(g['emotion'] for g in r['generations']).most_common())}")
    lengths = {
        r["label"]: sum(len(g["response"].split()) for g in r["generations"]) / len(r["generations"]) for r in rows
    }
    refs = sum(len(g["reference"].split()) for g in rows[0]["generations"]) / len(rows[0]["generations"])
    print(f"mean reply length in words: reference {refs:.1f}, " + ", ".join(f"{k} {v:.1f}" for k, v in lengths.items()))


if __name__ == "__main__":
    main()
