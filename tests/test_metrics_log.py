"""metrics.jsonl and Accelerate's trackers: lines as logged, resume without duplicates, bad lines, copy_logs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from elmd_sdk.errors import InputError
from elmd_sdk.trainers.metrics_log import (
    LOG_ENTRIES,
    METRICS_FILE,
    TRACKER_DIR,
    MetricsLog,
    copy_logs,
    read_metrics,
    split_report_to,
    tracker_names,
)


def _steps(out: Path, kind: str = "train") -> list[int]:
    return [r["step"] for r in read_metrics(out / METRICS_FILE) if r["kind"] == kind]


def test_each_log_call_is_one_line_with_step_kind_time_and_values(tmp_path: Path) -> None:
    before = time.time()
    with MetricsLog(tmp_path, run_name="eerg") as log:
        log.log(10, {"loss": 0.5, "lr": 2e-2, "samples_per_s": 3.25, "epoch": 0.5}, kind="train")
        log.log(10, {"loss": 0.75, "accuracy": 0.5, "macro_f1": None}, kind="valid")  # None: left out
        lines = (tmp_path / METRICS_FILE).read_text().splitlines()  # flushed as logged, before close
    assert len(lines) == 2
    train, valid = (json.loads(line) for line in lines)
    assert before <= train["time"] <= time.time() + 1e-3
    del train["time"], valid["time"]
    assert train == {"step": 10, "kind": "train", "loss": 0.5, "lr": 2e-2, "samples_per_s": 3.25, "epoch": 0.5}
    assert valid == {"step": 10, "kind": "valid", "loss": 0.75, "accuracy": 0.5}
    assert read_metrics(tmp_path / METRICS_FILE)[1]["accuracy"] == 0.5
    with pytest.raises(ValueError, match="kind"):
        log.log(11, {"loss": 1.0}, kind="test")


def test_a_new_run_replaces_the_file_and_a_resumed_one_keeps_the_steps_up_to_its_checkpoint(tmp_path: Path) -> None:
    with MetricsLog(tmp_path, run_name="rep") as log:
        for step in range(1, 6):
            log.log(step, {"loss": float(step)}, kind="train")
        log.log(4, {"macro_f1": 0.25}, kind="valid")
    with open(tmp_path / METRICS_FILE, "a") as fh:
        fh.write('{"step": 6, "kind": "tr')  # killed while writing its last line
    with MetricsLog(tmp_path, run_name="rep", resume_step=3) as log:  # the checkpoint was at step 3
        assert _steps(tmp_path) == [1, 2, 3] and _steps(tmp_path, "valid") == []
        log.log(4, {"loss": 40.0}, kind="train")
    assert _steps(tmp_path) == [1, 2, 3, 4]
    assert [r["loss"] for r in read_metrics(tmp_path / METRICS_FILE)] == [1.0, 2.0, 3.0, 40.0]
    MetricsLog(tmp_path, run_name="rep").close()  # a new run: the old lines go
    assert (tmp_path / METRICS_FILE).read_text() == ""
    with MetricsLog(tmp_path / "never", run_name="rep", resume_step=7):  # resumed from a run before metrics.jsonl
        pass
    assert read_metrics(tmp_path / "never" / METRICS_FILE) == []


def test_a_bad_line_is_an_input_error_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / METRICS_FILE
    good = json.dumps({"step": 1, "kind": "train", "loss": 1.0})
    path.write_text(f"{good}\n{{not json\n{good}\n")
    with pytest.raises(InputError, match="not a JSON line") as error:
        read_metrics(path)
    assert (error.value.file, error.value.line) == (str(path), 2)
    assert str(error.value).startswith(f"{path}:2: ")
    path.write_text(f"{good}\n\n" + json.dumps({"step": "2", "kind": "train"}) + "\n")
    with pytest.raises(InputError, match="integer step") as error:
        read_metrics(path)
    assert error.value.line == 3
    with pytest.raises(InputError, match="integer step"):  # resuming over a damaged file says where, too
        MetricsLog(tmp_path, run_name="erm", resume_step=5)
    with pytest.raises(InputError, match="file not found"):
        read_metrics(tmp_path / "missing.jsonl")
    path.write_text(f"{good}\n{good[:-3]}")  # an unfinished last line: being written, or cut by a kill
    assert [r["step"] for r in read_metrics(path)] == [1]


def test_other_processes_write_nothing(tmp_path: Path) -> None:
    with MetricsLog(tmp_path, run_name="eerg", report_to=("tensorboard",), main_process=False) as log:
        log.log(1, {"loss": 1.0}, kind="train")
    assert list(tmp_path.iterdir()) == []


def test_report_to_names() -> None:
    assert split_report_to(["tensorboard,wandb", " aim ", ""]) == ("tensorboard", "wandb", "aim")
    assert tracker_names([]) == () and tracker_names(["none"]) == ()
    with pytest.raises(InputError, match="unknown tracker 'tensorbord'") as error:
        tracker_names(["tensorbord"])
    assert error.value.field == "report_to"


def test_a_tracker_whose_package_is_missing_is_an_input_error(tmp_path: Path, monkeypatch) -> None:
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "_available_trackers", [])  # as on a machine without tensorboard
    with pytest.raises(InputError, match="--report-to tensorboard needs the tensorboard package: pip install") as error:
        MetricsLog(tmp_path, run_name="erm", report_to=("tensorboard",))
    assert error.value.field == "report_to"
    with pytest.raises(InputError, match="pip install comet-ml"):
        tracker_names(["comet_ml"])
    assert tracker_names(["all"]) == ()  # all installed trackers: none here


def test_tensorboard_gets_the_values_and_a_resumed_run_hides_the_replayed_steps(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = {"lr": 2e-2, "train": {"batch_size": 16, "report_to": ["tensorboard"]}, "max_steps": None}
    with MetricsLog(tmp_path, run_name="eerg", report_to=("tensorboard",), config=config) as log:
        for step in range(1, 6):
            log.log(step, {"loss": step / 4}, kind="train")
        log.log(5, {"macro_f1": 0.5}, kind="valid")
    with MetricsLog(tmp_path, run_name="eerg", report_to=("tensorboard",), resume_step=3) as log:
        log.log(4, {"loss": 10.0}, kind="train")
    events = EventAccumulator(str(tmp_path / TRACKER_DIR / "eerg"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 0.25), (2, 0.5), (3, 0.75), (4, 10.0)]
    assert events.Scalars("valid/macro_f1") == []  # logged at step 5, after the resumed checkpoint
    hparams = next((tmp_path / TRACKER_DIR / "eerg").glob("*/hparams.yml")).read_text()
    assert "train.batch_size: 16" in hparams and "train.report_to: '[\"tensorboard\"]'" in hparams


def test_copy_logs_carries_the_log_entries_only(tmp_path: Path) -> None:
    src, dst = tmp_path / "old", tmp_path / "new"
    (src / TRACKER_DIR / "erm").mkdir(parents=True)
    (src / TRACKER_DIR / "erm" / "events.out").write_text("events")
    (src / METRICS_FILE).write_text('{"step": 1, "kind": "train"}\n')
    (src / "curves.png").write_bytes(b"png")
    (src / "weights.safetensors").write_bytes(b"old weights")
    dst.mkdir()
    copy_logs(src, dst)
    assert sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*")) == sorted(
        ["curves.png", METRICS_FILE, TRACKER_DIR, f"{TRACKER_DIR}/erm", f"{TRACKER_DIR}/erm/events.out"]
    )
    assert (dst / METRICS_FILE).read_text() == '{"step": 1, "kind": "train"}\n'
    assert LOG_ENTRIES == (METRICS_FILE, "curves.png", TRACKER_DIR)
    copy_logs(tmp_path / "empty", dst)  # nothing there: nothing copied, no error
