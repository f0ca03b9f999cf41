"""Two CPU processes (``accelerate launch``, gloo) compute what one process computes: ERM with ERT and SSC over the
global batch, REP and EERG at the same global batch (and with gradient accumulation), a run stopped and resumed
under 2 processes, sharded ``index build`` and ``eval``; only the main process writes, and the feature cache is
filled once. The jobs are in ``multiprocess_jobs.py``: launched once, every job at 2 processes, then each compared
with the same job run here in one process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from erm_fakes import emotion_samples, save_tiny_sentence_model
from multiprocess_jobs import (
    EERG_STOP,
    ERM_STOP,
    Inputs,
    cli,
    dropout_free_prefix,
    erm_args,
    eval_args,
    index_args,
    run_eerg,
    run_rep,
    text_data,
    write_inputs,
)
from retriever_fakes import HashEncoder
from tolerances import SAME_MATH
from train_fakes import COLOURS, save_tiny_llm, write_colour_video

from elmd_sdk.data import write_jsonl
from elmd_sdk.io import load_tensors, read_json
from elmd_sdk.retrievers import build_index
from elmd_sdk.retrievers.encoder import ERMEncoder
from elmd_sdk.retrievers.index import load_index
from elmd_sdk.trainers.metrics_log import METRICS_FILE, read_metrics

JOBS = Path(__file__).with_name("multiprocess_jobs.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The jobs' inputs in ``root``, and every job run by 2 processes into ``root/launched``."""
    from chain_fakes import tiny_bundle

    root = tmp_path_factory.mktemp("multiprocess")
    videos = {label: write_colour_video(root / f"{label}.mp4", rgb) for label, rgb in COLOURS.items()}
    write_jsonl(root / "erm.jsonl", emotion_samples(26))  # 78 anchors: 5 batches of up to 16 pairs per epoch
    inputs = Inputs(
        sentence_model=save_tiny_sentence_model(root / "sentence", dropout=0.0),  # dropout masks follow the layout
        erm_data=str(root / "erm.jsonl"),
        llm=str(save_tiny_llm(root / "llm")),
        videos={label: str(path) for label, path in videos.items()},
        index=str(root / "index"),
        text_data=str(text_data(root / "text.jsonl")),
        eval_bundle=str(tiny_bundle(root / "eval_bundle")),
        prefix=str(dropout_free_prefix(root / "llm", root / "prefix")),
    )
    build_index(HashEncoder(), inputs.stage_samples()[0], inputs.index)
    write_inputs(root, inputs)
    launcher = Path(sys.executable).with_name("accelerate")
    command = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--mixed_precision", "no",
               "--main_process_port", str(_free_port()), str(JOBS), str(root)]  # fmt: skip
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}  # CPU processes, gloo
    done = subprocess.run(command, env=env, cwd=JOBS.parent, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return root


def _inputs(root: Path) -> Inputs:
    return Inputs(**read_json(root / "inputs.json"))


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    encoder = ERMEncoder.load(folder)
    return {f"{i}.{k}": v for i, m in enumerate(encoder.modules()) for k, v in m.state_dict().items()}


def _train_losses(folder: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(folder / METRICS_FILE) if r["kind"] == "train"]


def _close(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], tolerance: float) -> None:
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=tolerance, atol=tolerance, msg=key)


def test_erm_at_two_processes_gathers_the_global_batch_and_equals_one_process(root: Path, tmp_path: Path) -> None:
    launched = root / "launched"
    cli([*erm_args(_inputs(root)), "--out", str(tmp_path / "erm")])  # one process, batch 32
    (steps, losses), (one_steps, one_losses) = (zip(*_train_losses(folder), strict=True) for folder in
                                                (launched / "erm", tmp_path / "erm"))  # fmt: skip
    assert steps == one_steps == tuple(range(1, 11))
    # Without the gather each process would contrast 16 utterances: another loss from the first step on.
    assert losses == pytest.approx(one_losses, rel=SAME_MATH, abs=SAME_MATH)
    _close(_weights(launched / "erm"), _weights(tmp_path / "erm"), SAME_MATH)
    # Stopped at step 4 and resumed under 2 processes: the uninterrupted 2-process run, exactly.
    _close(_weights(launched / "erm_resumed"), _weights(launched / "erm"), 0.0)
    assert _train_losses(launched / "erm_resumed") == _train_losses(launched / "erm")
    assert ERM_STOP < 10 and not (launched / "erm_resumed" / "checkpoint").exists()


def _stage_weights(bundle: Path) -> dict[str, torch.Tensor]:
    weights = load_tensors(bundle / "projector" / "projector.safetensors")
    if (bundle / "prefix").is_dir():
        weights |= {f"prefix.{k}": v for k, v in load_tensors(bundle / "prefix" / "prefix.safetensors").items()}
    return weights


def test_rep_and_eerg_at_two_processes_equal_one_process_and_accumulation(root: Path, tmp_path: Path) -> None:
    inputs, launched = _inputs(root), root / "launched"
    run_rep(inputs, tmp_path / "rep", tmp_path / "cache")
    _close(_stage_weights(launched / "rep"), _stage_weights(tmp_path / "rep"), SAME_MATH)
    eerg = _stage_weights(launched / "eerg")  # 2 processes x 2 examples per step
    for name, overrides in (("one", {}), ("accumulated", {"grad_accum": 2})):  # 1 x 4, and 1 x (2 + 2)
        run_eerg(inputs, launched / "rep", tmp_path / name, tmp_path / "cache", **overrides)
        _close(eerg, _stage_weights(tmp_path / name), SAME_MATH)
    (steps, losses), (one_steps, one_losses) = (zip(*_train_losses(folder), strict=True) for folder in
                                                (launched / "eerg", tmp_path / "one"))  # fmt: skip
    assert steps == one_steps == (4,) and losses == pytest.approx(one_losses, rel=SAME_MATH)
    # Stopped after step 1 and resumed under 2 processes: the uninterrupted 2-process run, exactly.
    _close(_stage_weights(launched / "eerg_resumed"), eerg, 0.0)
    assert EERG_STOP < 4 and _train_losses(launched / "eerg_resumed") == _train_losses(launched / "eerg")


def test_only_the_main_process_writes_and_the_feature_cache_is_filled_once(root: Path) -> None:
    main, other = (read_json(root / "launched" / f"rank{rank}.json") for rank in (0, 1))
    assert main["processes"] == other["processes"] == 2
    written = ("save_checkpoint", "write_bundle", "atomic_folder", "save_index", "write_report", "metrics_lines")
    assert all(main.get(name, 0) > 0 for name in written), main
    assert main["progress_shown"] > 0  # train erm on a terminal or not: rank 0 shows progress (lines)
    assert {name: other.get(name, 0) for name in (*written, "progress_shown")} == dict.fromkeys(
        (*written, "progress_shown"), 0
    )
    clips = len({s.video for s in (*_inputs(root).stage_samples()[0], *_inputs(root).stage_samples()[1])})
    assert main["clips_encoded"] + other["clips_encoded"] == clips == 6  # each clip once, the work shared
    assert main["clips_encoded"] == other["clips_encoded"] == 3


def test_index_build_at_two_processes_writes_the_one_process_index(root: Path) -> None:
    launched, single = root / "launched", root / "launched" / "index_one"  # beside the ERM, as the launched one
    cli(index_args(_inputs(root), launched / "erm", single))
    one, two = load_index(single), load_index(launched / "index")
    n = one.manifest.count
    assert n == two.manifest.count == 8
    vectors = [np.stack([i.store.index.reconstruct(k) for k in range(n)]) for i in (one, two)]  # (n, dim)
    np.testing.assert_allclose(vectors[1], vectors[0], rtol=SAME_MATH, atol=SAME_MATH)
    for name in ("docstore.json", "id_map.json"):
        assert (launched / "index" / name).read_bytes() == (single / name).read_bytes()
    manifests = [read_json(folder / "index.json") for folder in (single, launched / "index")]
    for manifest in manifests:
        manifest["sha256"].pop("index.faiss")
    assert manifests[1].pop("score_baseline") == pytest.approx(manifests[0].pop("score_baseline"), abs=SAME_MATH)
    assert manifests[1] == manifests[0]


def _without_floats(value: Any) -> Any:
    """``value`` with its non-integer numbers taken out (compared apart, within a tolerance)."""
    if isinstance(value, dict):
        return {k: _without_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_floats(v) for v in value]
    return None if isinstance(value, float) else value


def _floats(value: Any) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _floats(v)]
    if isinstance(value, list):
        return [x for v in value for x in _floats(v)]
    return [value] if isinstance(value, float) else []


def test_eval_at_two_processes_writes_the_one_process_report(root: Path, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each launched process: greedy argmax over the random LLM's near-ties
    try:
        cli(eval_args(_inputs(root), tmp_path / "report.json"))
    finally:
        torch.set_num_threads(threads)
    one, two = (json.loads(path.read_text()) for path in (tmp_path / "report.json", root / "launched" / "report.json"))
    assert len(two["generations"]) == 8
    assert _without_floats(two) == _without_floats(one)  # the same generations, emotions, settings and counts
    assert _floats(two) == pytest.approx(_floats(one), rel=SAME_MATH, abs=SAME_MATH)  # label probabilities, metrics
