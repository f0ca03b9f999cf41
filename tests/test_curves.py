"""curves.png from metrics.jsonl: a PNG of the expected size for REP/EERG and ERM keys, nothing without data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from elmd_sdk.errors import InputError
from elmd_sdk.trainers.curves import CURVES_FILE, FIGURE_SIZE, plot_curves, write_curves
from elmd_sdk.trainers.metrics_log import METRICS_FILE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps({"time": 0.0, **r}) + "\n" for r in records))
    return path


def _image(path: Path) -> np.ndarray:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return matplotlib.image.imread(path)


def _eerg_records() -> list[dict]:
    train = [
        {"step": s, "kind": "train", "loss": 3.0 / s, "lr": 0.02, "samples_per_s": 2.5, "epoch": s / 40}
        for s in (10, 20, 30, 40)
    ]
    valid = [
        {"step": 20, "kind": "valid", "loss": 1.5, "accuracy": 0.25, "macro_f1": 0.125},
        {"step": 40, "kind": "valid", "loss": 1.25, "accuracy": 0.375, "macro_f1": 0.25},
    ]
    return train + valid


def test_eerg_curves_are_a_png_of_the_expected_size(tmp_path: Path) -> None:
    metrics = _write(tmp_path / METRICS_FILE, _eerg_records())
    out = plot_curves(metrics, tmp_path / CURVES_FILE, title="train eerg")
    assert out == tmp_path / CURVES_FILE
    image = _image(out)
    assert image.shape == (100 * FIGURE_SIZE[1], 100 * FIGURE_SIZE[0], 4) == (400, 1000, 4)
    assert image[..., :3].std() > 0.05  # curves and text drawn, not a blank picture
    assert sorted(p.name for p in tmp_path.iterdir()) == [CURVES_FILE, METRICS_FILE]  # no temporary file left


def test_erm_keys_and_training_only_runs_are_drawn_too(tmp_path: Path) -> None:
    erm = [
        {"step": 3, "kind": "train", "loss": 2.0},
        {"step": 3, "kind": "valid", "match_micro": 0.5, "match_macro": 0.25},
        {"step": 6, "kind": "train", "loss": 1.0},
        {"step": 6, "kind": "valid", "match_micro": 0.75, "match_macro": 0.5},
    ]
    first = _image(plot_curves(_write(tmp_path / "erm.jsonl", erm), tmp_path / "erm.png"))
    only_train = [r for r in erm if r["kind"] == "train"]
    second = _image(plot_curves(_write(tmp_path / "train.jsonl", only_train), tmp_path / "train.png"))
    assert first.shape == second.shape == (400, 1000, 4)
    assert not np.array_equal(first, second)  # the validation panel differs


def test_nothing_to_plot_writes_nothing(tmp_path: Path) -> None:
    assert plot_curves(_write(tmp_path / METRICS_FILE, []), tmp_path / CURVES_FILE) is None
    valid_without_numbers = [{"step": 1, "kind": "valid", "note": "x"}]
    assert plot_curves(_write(tmp_path / METRICS_FILE, valid_without_numbers), tmp_path / CURVES_FILE) is None
    assert not (tmp_path / CURVES_FILE).exists()
    assert write_curves(tmp_path / "no-run") is None  # no metrics.jsonl: nothing to draw
    _write(tmp_path / METRICS_FILE, _eerg_records())
    assert write_curves(tmp_path) == tmp_path / CURVES_FILE and _image(tmp_path / CURVES_FILE).shape == (400, 1000, 4)


def test_a_bad_metrics_file_is_an_input_error(tmp_path: Path) -> None:
    (tmp_path / METRICS_FILE).write_text("[]\n")
    with pytest.raises(InputError, match=f"{METRICS_FILE}:1"):
        plot_curves(tmp_path / METRICS_FILE, tmp_path / CURVES_FILE)
    assert not (tmp_path / CURVES_FILE).exists()
