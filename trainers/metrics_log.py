"""The metrics log every training stage (ERM, REP, EERG) writes: ``OUT/metrics.jsonl``, and Accelerate's trackers.

One JSON line per training interval or validation, ``{"step", "kind", "time", **values}`` with ``kind`` "train"
(loss, lr, samples_per_s, epoch) or "valid" (the stage's validation metrics), each line flushed and fsynced as it is
written: a killed run loses at most the line being written. A resumed run keeps the lines up to its checkpoint's step
and appends after them, so the file has each step once. ``--report-to`` sends the same values to Accelerate's
trackers (``accelerate.tracking``: TensorBoard under ``OUT/runs``, W&B, MLflow, ...) as ``train/loss``,
``valid/macro_f1``, ..., built without an ``Accelerator``. ``curves.png`` (:mod:`elmd_sdk.trainers.curves`) is drawn
from the file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from elmd_sdk.errors import InputError
from elmd_sdk.io import atomic_write_text

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"  # drawn by elmd_sdk.trainers.curves.plot_curves
TRACKER_DIR = "runs"  # Accelerate tracker logs under OUT/runs (TensorBoard: OUT/runs/RUN_NAME)
LOG_ENTRIES = (METRICS_FILE, CURVES_FILE, TRACKER_DIR)  # what copy_logs carries into a new output folder
KINDS = ("train", "valid")

# Tracker name (accelerate's LoggerType) -> the pip package that provides it.
TRACKER_PACKAGES = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "trackio": "trackio",
    "comet_ml": "comet-ml",
    "aim": "aim",
    "mlflow": "mlflow",
    "clearml": "clearml",
    "dvclive": "dvclive",
    "swanlab": "swanlab",
}


@dataclass
class TrainInterval:
    """The optimizer steps since the last training line of metrics.jsonl. A checkpoint keeps it (``asdict``), so a
    resumed run writes the lines an uninterrupted one would."""

    loss_sum: float = 0.0
    steps: int = 0
    samples: int = 0
    seconds: float = 0.0  # wall time of the steps themselves (validation and checkpoints left out)

    def add(self, loss: float, samples: int, seconds: float) -> None:
        """One more optimizer step: its mean loss, its samples and its seconds."""
        self.loss_sum += loss
        self.steps += 1
        self.samples += samples
        self.seconds += seconds

    def line(self, lr: float, epoch: float) -> dict[str, float]:
        """The training line: the interval's mean loss, the last step's learning rate, samples/s, epoch."""
        return {
            "loss": self.loss_sum / self.steps,
            "lr": lr,
            "samples_per_s": self.samples / max(self.seconds, 1e-9),
            "epoch": epoch,
        }


def split_report_to(values: Sequence[str]) -> tuple[str, ...]:
    """``--report-to`` as given (repeated and/or comma-separated) as one tuple of names, blanks dropped."""
    return tuple(name.strip() for value in values for name in value.split(",") if name.strip())


def tracker_names(report_to: Sequence[str]) -> tuple[str, ...]:
    """The trackers ``report_to`` asks for, as transformers' ``report_to``: "none" for none, "all" for every
    installed one, else the names given; an :class:`InputError` for an unknown name or one whose package is missing.
    Imports accelerate only when a tracker is asked for."""
    names = split_report_to(report_to)
    if not names or "none" in names:
        return ()
    from accelerate.tracking import get_available_trackers

    available = [str(t) for t in get_available_trackers()]
    if "all" in names:
        return tuple(name for name in TRACKER_PACKAGES if name in available)
    for name in names:
        if name not in TRACKER_PACKAGES:
            choices = ", ".join(["all", "none", *TRACKER_PACKAGES])
            raise InputError(f"unknown tracker {name!r}; choose from {choices}", field="report_to")
        if name not in available:
            package = TRACKER_PACKAGES[name]
            raise InputError(
                f"--report-to {name} needs the {package} package: pip install {package}", field="report_to"
            )
    return tuple(dict.fromkeys(names))


def _flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``config`` with nested dicts as dotted keys and lists as JSON text: the scalars trackers store as hparams."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(_flat_config(value, f"{prefix}{key}."))
        elif value is None or isinstance(value, bool | int | float | str):
            flat[prefix + key] = value
        else:
            flat[prefix + key] = json.dumps(value, default=str)
    return flat


def _parse(path: Path, text: str) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl text; an unfinished last line (no newline: a run killed while writing it, or
    being written now) is left out, any other bad line is an :class:`InputError` naming the file and line."""
    lines = text.split("\n")
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            if number == len(lines):  # no newline after it: the line being written when the run stopped
                break
            raise InputError(f"not a JSON line ({error.msg})", file=path, line=number) from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int) or record.get("kind") not in KINDS:
            raise InputError(
                "not a metrics record (needs an integer step and kind train or valid)", file=path, line=number
            )
        records.append(record)
    return records


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` in file order (an :class:`InputError` for a missing file or a bad line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", file=path) from None
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text", file=path) from None
    return _parse(path, text)


def copy_logs(src: str | Path, dst: str | Path) -> None:
    """Copy the :data:`LOG_ENTRIES` found in ``src`` into ``dst`` (before a new output folder replaces ``src``)."""
    src, dst = Path(src), Path(dst)
    for name in LOG_ENTRIES:
        entry = src / name
        if entry.is_dir():
            shutil.copytree(entry, dst / name, dirs_exist_ok=True)
        elif entry.is_file():
            shutil.copy2(entry, dst / name)


class MetricsLog:
    """Appends training and validation metrics to ``out_dir/metrics.jsonl`` and the ``report_to`` trackers.

    ``resume_step=None`` starts a new file (an old one is replaced); an int keeps the lines with ``step <=
    resume_step`` (the file rewritten atomically) and appends after them. ``open_interval``: the checkpoint's logging
    interval is unfinished, so a training line at ``resume_step`` was the partial one of a run stopped there, and goes
    (the resumed run writes the whole interval's). On a process other than the main one every method does nothing.
    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        out_dir: str | Path,
        *,
        run_name: str,
        report_to: Sequence[str] = (),
        config: dict[str, Any] | None = None,
        main_process: bool = True,
        resume_step: int | None = None,
        open_interval: bool = False,
    ) -> None:
        self.path = Path(out_dir) / METRICS_FILE
        self._file: IO[str] | None = None
        self._trackers: list[Any] = []
        if not main_process:
            return
        names = tracker_names(report_to)
        kept: list[dict[str, Any]] = []
        if resume_step is not None and self.path.is_file():
            partial = (resume_step, "train") if open_interval else None
            records = read_metrics(self.path)
            kept = [r for r in records if r["step"] <= resume_step and (r["step"], r["kind"]) != partial]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (open until close)
        self._trackers = [_start_tracker(name, run_name, Path(out_dir), resume_step) for name in names]
        if config is not None:
            for tracker in self._trackers:
                tracker.store_init_configuration(_flat_config(config))

    def log(self, step: int, values: Mapping[str, float | int | None], *, kind: str) -> None:
        """Write one line ``{"step", "kind", "time", **values}`` (None values left out) and send ``values`` to the
        trackers as ``KIND/NAME`` at ``step``."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if self._file is None:
            return
        present = {k: v for k, v in values.items() if v is not None}
        record = {"step": step, "kind": kind, "time": round(time.time(), 3), **present}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        for tracker in self._trackers:
            tracker.log({f"{kind}/{k}": v for k, v in present.items()}, step=step)

    def close(self) -> None:
        """Finish the trackers and close the file; calling it again does nothing."""
        trackers, self._trackers = self._trackers, []
        for tracker in trackers:
            tracker.finish()
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def _start_tracker(name: str, run_name: str, out_dir: Path, resume_step: int | None) -> Any:
    """Accelerate's tracker ``name``, started, logging under ``out_dir/runs`` where it keeps local files."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    tracker_class = LOGGER_TYPE_TO_CLASS[name]
    kwargs: dict[str, Any] = {}
    if name == "tensorboard":  # hide the events an earlier, killed or replaced run logged after this run's start
        kwargs["purge_step"] = 0 if resume_step is None else resume_step + 1
    if tracker_class.requires_logging_directory:
        tracker = tracker_class(run_name, out_dir / TRACKER_DIR, **kwargs)
    else:
        tracker = tracker_class(run_name, **kwargs)
    tracker.start()
    return tracker
