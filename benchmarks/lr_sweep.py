"""Learning-rate and prefix-length probes of EERG at the evidence run's scale (README "Does training help?").

Each probe is ``elmd-sdk train eerg`` on the data of a ``benchmarks/training_evidence.sh OUT_DIR`` run (its
``train.jsonl``, ``valid.jsonl`` and ``index``), stopped after the first ``--steps`` optimizer steps of the same
schedule (``--max-steps``: same batches, same linear decay over the full run's steps, so its figures compare with the
full run's at the same step), validated every ``--eval-every`` steps. Prints per probe and validation step the answer
loss, the raw and the calibrated (batch prior of the validation prompts: what inference does) emotion accuracy and
macro-F1, and the seconds per step; then the full run's validations at those steps from ``OUT_DIR/bundle``, and the
untuned base (step 0: the bundle's LLM without its prefix) on the same validation samples, scored by ``elmd-sdk eval
--rows base`` (raw, and with its prior fitted on those samples), so no answer loss for it.

Run: ``.venv/bin/python benchmarks/lr_sweep.py OUT_DIR [--steps 50] [--eval-every 25] [--grid 2e-2:128,5e-3:128]``
Probes go to ``OUT_DIR/sweep/lr<LR>_p<PREFIX>``; a finished probe is read, not re-run; a killed one resumes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import training_seconds

from elmd_sdk.trainers.metrics_log import METRICS_FILE, read_metrics

BATCH = 16


def _lines(folder: Path) -> list[dict[str, Any]]:
    """The run's metrics.jsonl records (none before it starts)."""
    path = folder / METRICS_FILE
    return read_metrics(path) if path.is_file() else []


def _probe(out: Path, folder: Path, lr: str, prefix: int, steps: int, eval_every: int, total: int) -> None:
    """Train one probe unless its last validation is already there."""
    if any(m["kind"] == "valid" and m["step"] == steps for m in _lines(folder)):
        return
    command = [
        sys.executable, "-m", "elmd_sdk.cli.main", "train", "eerg", "--index", str(out / "index"), "--no-video",
        "--data", str(out / "train.jsonl"), "--valid", str(out / "valid.jsonl"), "--out", str(folder),
        "--lr", lr, "--pre-seq-len", str(prefix), "--eval-every", str(eval_every), "--max-steps", str(steps),
        "--batch-size", str(BATCH), "--keep", "last",
    ]  # fmt: skip
    if (folder / "checkpoint").is_dir():
        command.append("--resume")
    started = time.time()
    print(f"probe lr {lr} prefix {prefix}: {steps} of {total} steps ...", flush=True)
    subprocess.run(command, check=True)
    print(f"  {time.time() - started:.0f} s wall-clock", flush=True)


def _untuned(out: Path) -> dict[str, Any]:
    """Step 0: ``elmd-sdk eval --rows base`` on the validation samples, raw and calibrated on them (reports kept)."""
    metrics: dict[str, Any] = {}
    for name, option in (("raw", "--no-emotion-calibration"), ("calibrated", f"--calibrate-on={out / 'valid.jsonl'}")):
        report = out / "sweep" / f"untuned_{name}.json"
        if not report.is_file():
            subprocess.run(
                [
                    sys.executable, "-m", "elmd_sdk.cli.main", "eval", "--ablations", "--rows", "base",
                    "--bundle", str(out / "bundle"), "--data", str(out / "valid.jsonl"), "--greedy",
                    "--max-new-tokens", "8", "--batch-size", "8", option, "--out", str(report),
                ],
                check=True,
            )  # fmt: skip
        [row] = json.loads(report.read_text(encoding="utf-8"))["rows"]
        metrics[name] = (row["metrics"]["emotion_accuracy"], row["metrics"]["emotion_macro_f1"])
    return metrics


def _row(name: str, line: dict[str, Any], seconds: float | None) -> str:
    """One table row; a run validated before calibration existed logged its raw choice as accuracy/macro_f1."""
    calibrated = "raw_macro_f1" in line
    raw_acc = line["raw_accuracy"] if calibrated else line["accuracy"]
    raw_f1 = line["raw_macro_f1"] if calibrated else line["macro_f1"]
    cal = f"{100 * line['accuracy']:.1f} / {100 * line['macro_f1']:.1f}" if calibrated else "not measured"
    speed = f"{seconds:.1f}" if seconds is not None else ""
    raw = f"{100 * raw_acc:.1f} / {100 * raw_f1:.1f}"
    return f"| {name} | {line['step']} | {line['loss']:.3f} | {raw} | {cal} | {speed} |"


def _seconds_per_step(lines: list[dict[str, Any]]) -> float | None:
    steps, seconds = training_seconds(lines, BATCH)
    return seconds / steps if steps else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the training_evidence.sh output folder")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--grid", default="2e-2:128,5e-3:128,2e-3:128,2e-2:16", help="LR:PREFIX,...")
    args = parser.parse_args()
    total = sum(1 for _ in (args.out / "train.jsonl").open(encoding="utf-8")) // BATCH
    grid = [(lr, int(prefix)) for lr, prefix in (item.split(":") for item in args.grid.split(","))]
    for lr, prefix in grid:
        _probe(args.out, args.out / "sweep" / f"lr{lr}_p{prefix}", lr, prefix, args.steps, args.eval_every, total)

    print(f"\nEERG probes: first {args.steps} of {total} steps (batch {BATCH}), {args.out / 'valid.jsonl'} validation")
    print("| run | step | valid loss | raw acc / macro-F1 | calibrated acc / macro-F1 | s/step |")
    print("|---|---|---|---|---|---|")
    for lr, prefix in grid:
        lines = _lines(args.out / "sweep" / f"lr{lr}_p{prefix}")
        seconds = _seconds_per_step(lines)
        for line in (m for m in lines if m["kind"] == "valid"):
            print(_row(f"lr {lr}, prefix {prefix}", line, seconds))
    untuned = _untuned(args.out)
    raw, calibrated = (f"{acc:.1f} / {f1:.1f}" for acc, f1 in (untuned["raw"], untuned["calibrated"]))
    print(f"| untuned base | 0 | n/a | {raw} | {calibrated} | |")
    full = _lines(args.out / "bundle")
    for line in (m for m in full if m["kind"] == "valid" and m["step"] <= max(args.steps, 100)):
        print(_row(f"full run ({total} steps)", line, _seconds_per_step(full)))


if __name__ == "__main__":
    main()
