"""The end REP and EERG share: run a prepared stage, write its bundle and record the run (or, on resume, reload it).

A run killed after its bundle was written but before the checkpoint was dropped is found complete by
:func:`~elmd_sdk.trainers.stage.finished_run`; its trained weights are then read back from the bundle.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from elmd_sdk.bundle import PREFIX_DIR, PROJECTOR_DIR
from elmd_sdk.bundle.write import TrainedParts, write_bundle
from elmd_sdk.io import atomic_folder
from elmd_sdk.models.peft_adapter import save_peft_adapter
from elmd_sdk.models.prefix import PrefixEncoder
from elmd_sdk.trainers.metrics_log import copy_logs
from elmd_sdk.trainers.stage import (
    Stage,
    StageResult,
    TrainConfig,
    finish_stage,
    finished_run,
    run_identity,
    run_stage,
)
from elmd_sdk.video import VideoProjector


def train_to_bundle(
    accelerator: Any, stage: Stage, config: TrainConfig, out_dir: Path, resume: bool, parts: TrainedParts
) -> StageResult:
    """Train ``stage`` (see :func:`~elmd_sdk.trainers.stage.run_stage`); once complete, write ``parts`` to ``out_dir``.

    ``parts.projector`` and ``parts.prefix`` are the modules ``stage`` trains: their weights (the last or, with
    ``keep="best"``, the best-validated ones) are what the bundle gets;
    the prefix folder also holds the prefix as a PEFT prefix-tuning adapter (:mod:`elmd_sdk.models.peft_adapter`).
    """
    identity = run_identity(stage.identity, config)
    finished = finished_run(out_dir, stage.name, identity) if resume else None
    if finished is not None:  # killed after it had finished: the bundle holds the result
        if parts.prefix is not None:
            loaded = PrefixEncoder.load(out_dir / PREFIX_DIR, model=stage.model.llm)
            parts.prefix.load_state_dict(loaded.state_dict())
        if parts.projector is not None:
            parts.projector.load_state_dict(VideoProjector.load(out_dir / PROJECTOR_DIR).state_dict())
        history, total, kept = finished
        return StageResult(stage.model.eval(), history, total, total, kept)
    result = run_stage(accelerator, stage, config, out_dir, resume)
    if result.completed and accelerator.is_main_process:
        with atomic_folder(out_dir) as folder:  # the finished bundle replaces the folder (and its checkpoints)
            prior = result.kept.get("emotion_log_prior")  # the kept weights' validation prior, when validated
            write_bundle(folder, replace(parts, emotion_log_prior=prior), out_dir.resolve().name)
            if parts.prefix is not None:  # the prefix folder doubles as a PEFT adapter: PeftModel.from_pretrained
                save_peft_adapter(parts.prefix, stage.model.llm, folder / PREFIX_DIR, parts.base_llm)
            finish_stage(folder, stage.name, identity, result)
            copy_logs(out_dir, folder)  # metrics.jsonl and tracker logs stay with the bundle
    accelerator.wait_for_everyone()
    return result
