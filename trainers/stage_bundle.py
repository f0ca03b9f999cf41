"""The end REP and EERG share: assemble the stage from its frozen parts and what it trains, run it, write its bundle
and record the run (or, on resume, reload a run already finished).

A run killed after its bundle was written but before the checkpoint was dropped is found complete by
:func:`~elmd_sdk.trainers.loop.finished_run`; its trained weights are then read back from the bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elmd_sdk.bundle import PREFIX_DIR, PROJECTOR_DIR
from elmd_sdk.bundle.write import TrainedParts, write_bundle
from elmd_sdk.io import atomic_folder
from elmd_sdk.models.peft_adapter import export_peft_adapter
from elmd_sdk.models.prefix import PrefixEncoder
from elmd_sdk.trainers.loop import ParamGroup, finished_run, record_run, run_identity
from elmd_sdk.trainers.metrics_log import copy_logs
from elmd_sdk.trainers.pipeline import FrozenParts, PreparedData, stage_identity
from elmd_sdk.trainers.stage import Stage, StageEpochStats, StageResult, run_stage
from elmd_sdk.trainers.stage_model import StageModel
from elmd_sdk.trainers.train_config import TrainConfig
from elmd_sdk.video import VideoProjector


@dataclass
class Trained:
    """What a stage trains: the projector and/or the prefix (attached inside the LLM), and their parameter groups."""

    projector: VideoProjector | None
    prefix: PrefixEncoder | None
    groups: list[ParamGroup]


def train_to_bundle(
    accelerator: Any,
    name: str,
    frozen: FrozenParts,
    data: PreparedData,
    trained: Trained,
    config: TrainConfig,
    out_dir: Path,
    resume: bool,
    *,
    data_hash: str,
    description: str,
    **identity: Any,
) -> StageResult:
    """Train stage ``name`` (see :func:`~elmd_sdk.trainers.stage.run_stage`); once complete, write its bundle to
    ``out_dir``. ``identity``: the stage's own settings a resume must share, beside the common ones.

    The bundle gets the trained weights (the last or, with ``keep="best"``, the best-validated ones); the prefix
    folder also holds the prefix as a PEFT prefix-tuning adapter, or where PEFT's format cannot express the model's
    positions ``peft_export.json`` saying why (:mod:`elmd_sdk.models.peft_adapter`).
    """
    model = StageModel(frozen.llm, trained.projector)
    stage = Stage(
        name,
        model,
        trained.groups,
        data.train,
        data.valid,
        data.candidates,
        data.video_features,
        stage_identity(name, frozen, accelerator, data_hash, **identity),
    )
    full_identity = run_identity(stage.identity, config)
    finished = finished_run(out_dir, name, full_identity) if resume else None
    if finished is not None:  # killed after it had finished: the bundle holds the result
        if trained.prefix is not None:
            trained.prefix.load_state_dict(PrefixEncoder.load(out_dir / PREFIX_DIR, model=frozen.llm).state_dict())
        if trained.projector is not None:
            trained.projector.load_state_dict(VideoProjector.load(out_dir / PROJECTOR_DIR).state_dict())
        history, total, kept = finished
        return StageResult([StageEpochStats(**h) for h in history], total, total, kept, model=model.eval())
    result = run_stage(accelerator, stage, config, out_dir, resume)
    if result.completed and accelerator.is_main_process:
        with atomic_folder(out_dir) as folder:  # the finished bundle replaces the folder (and its checkpoints)
            parts = TrainedParts(
                base_llm=frozen.llm_name,
                base_llm_config_sha256=frozen.llm_fp["config_sha256"],
                language=frozen.prompt.language,
                labels=frozen.prompt.labels,
                index=frozen.index,
                erm=frozen.erm,
                visual_encoder=frozen.visual_encoder,
                visual_encoder_fingerprint=frozen.cache.fingerprint if frozen.cache is not None else None,
                projector=trained.projector,
                frames=frozen.frames,
                prefix=trained.prefix,
                training_data_sha256=data_hash,
                description=description,
                emotion_log_prior=result.kept.get("emotion_log_prior"),  # the kept weights' prior, when validated
            )
            write_bundle(folder, parts, out_dir.resolve().name)
            if trained.prefix is not None:  # the prefix folder doubles as a PEFT adapter where PEFT can express it
                export_peft_adapter(trained.prefix, frozen.llm, folder / PREFIX_DIR, frozen.llm_name)
            record_run(folder, name, full_identity, result)
            copy_logs(out_dir, folder)  # metrics.jsonl and tracker logs stay with the bundle
    accelerator.wait_for_everyone()
    return result
