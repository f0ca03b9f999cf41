"""The jobs tests/test_multiprocess.py runs both in one process and, through this file, under ``accelerate launch``
with 2 CPU processes: ERM training (the command line; also stopped at step 4 and resumed), REP and EERG training (the
Python API with the colour encoder; EERG also stopped and resumed), ``index build`` and ``eval``.

Launched as ``accelerate launch ... tests/multiprocess_jobs.py ROOT``, every rank runs every job on the inputs of
``ROOT/inputs.json`` into ``ROOT/launched/`` and records in ``ROOT/launched/rank{R}.json`` what it wrote itself
(checkpoints, metrics lines, bundles, folders, reports), whether it showed progress, and how many clips it encoded
into the feature cache.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from retriever_fakes import HashEncoder
from train_fakes import ColourEncoder, colour_samples, text_samples

from elmd_sdk.data.records import Sample
from elmd_sdk.retrievers import EmotionalRetriever
from elmd_sdk.trainers.eerg import EergConfig, train_eerg
from elmd_sdk.trainers.examples import PromptConfig
from elmd_sdk.trainers.rep import RepConfig, train_rep
from elmd_sdk.trainers.stage import StageResult
from elmd_sdk.trainers.train_config import TrainConfig

LABELS = ("happy", "sad", "anger")
FRAMES = 4
ERM_STOP = 4  # the ERM run stopped here and resumed (10 steps in all)
EERG_STOP = 1  # the EERG run stopped here and resumed (4 steps in all)


@dataclass
class Inputs:
    """Files every job reads (made once by the test)."""

    sentence_model: str  # tiny sentence-transformers folder (no dropout)
    erm_data: str  # JSONL: 80 utterances, 10 ERM steps at batch 32 over 2 epochs
    llm: str  # tiny LLM folder
    videos: dict[str, str]  # colour -> clip
    index: str  # demonstration index of the stage samples (HashEncoder)
    text_data: str  # JSONL: the samples index build and eval run on
    eval_bundle: str  # tiny bundle (LLM + prefix, greedy)
    prefix: str  # EERG's starting prefix (2 positions) without dropout: masks would be drawn per process

    def stage_samples(self) -> tuple[list[Sample], list[Sample]]:
        videos = {label: Path(path) for label, path in self.videos.items()}
        return colour_samples(videos, 2, "t"), colour_samples(videos, 1, "v")


def erm_args(inputs: Inputs) -> list[str]:
    """``train erm`` without --out: global batch 32 (16 pairs), 5 steps per epoch, a metrics line per step."""
    return ["train", "erm", "--data", inputs.erm_data, "--base-model", inputs.sentence_model, "--batch-size", "32",
            "--epochs", "2", "--lr", "1e-3", "--s", "2", "--logging-steps", "1"]  # fmt: skip


def index_args(inputs: Inputs, erm: Path, out: Path) -> list[str]:
    """``index build`` of the text samples with the ERM ``erm``, 2 utterances per encoder batch."""
    return ["index", "build", "--data", inputs.text_data, "--erm", str(erm), "--batch-size", "2", "--out", str(out)]


def eval_args(inputs: Inputs, out: Path) -> list[str]:
    """``eval`` of the tiny bundle on the text samples, greedy (closed-set emotion scores included)."""
    return ["eval", "--bundle", inputs.eval_bundle, "--data", inputs.text_data, "--greedy", "--max-new-tokens", "6",
            "--out", str(out)]  # fmt: skip


def engine(**overrides: Any) -> TrainConfig:
    """REP/EERG engine: global batch 4 over 6 samples (2 steps per epoch), 2 epochs, float32, a checkpoint per step."""
    settings = {"epochs": 2, "batch_size": 4, "mixed_precision": "no", "progress": False, "checkpoint_every": 1}
    return TrainConfig(**{**settings, **overrides})


def run_rep(inputs: Inputs, out: Path, cache: Path, **overrides: Any) -> StageResult:
    config = RepConfig(
        index=inputs.index,
        llm=inputs.llm,
        frames=FRAMES,
        feature_cache=str(cache),
        prompt=PromptConfig(labels=LABELS),
        train=engine(**overrides),
        lr=0.2,
    )
    train, valid = inputs.stage_samples()
    retriever = EmotionalRetriever.load(inputs.index, encoder=HashEncoder())
    return train_rep(config, train, valid, out, visual_encoder=ColourEncoder(), retriever=retriever)


def run_eerg(inputs: Inputs, rep: Path, out: Path, cache: Path, resume: bool = False, **overrides: Any) -> StageResult:
    config = EergConfig(
        from_bundle=str(rep),
        frames=FRAMES,
        feature_cache=str(cache),
        prefix_init=inputs.prefix,
        lr=0.05,
        train=engine(**overrides),
    )
    train, valid = inputs.stage_samples()
    retriever = EmotionalRetriever.load(inputs.index, encoder=HashEncoder())
    return train_eerg(config, train, valid, out, resume=resume, visual_encoder=ColourEncoder(), retriever=retriever)


def cli(args: list[str]) -> None:
    """One ``elmd-sdk`` command, exceptions raised (a failing rank stops the launch)."""
    from elmd_sdk.cli.main import app

    app(args, standalone_mode=False)


def _record_writes(patch: Any, counts: Counter[str]) -> None:
    """Count, in ``counts``, what this process writes and encodes, and the progress bars it shows."""
    from elmd_sdk import evaluate
    from elmd_sdk.retrievers import index_build
    from elmd_sdk.trainers import erm, loop, stage_bundle
    from elmd_sdk.trainers.feature_cache import FeatureCache
    from elmd_sdk.trainers.metrics_log import MetricsLog

    def counted(name: str, function: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return function(*args, **kwargs)

        return wrapper

    for module, name in ((loop, "save_checkpoint"), (stage_bundle, "write_bundle"), (erm, "atomic_folder"),
                         (index_build, "save_index"), (evaluate, "write_report")):  # fmt: skip
        patch.setattr(module, name, counted(name, getattr(module, name)))
    patch.setattr(FeatureCache, "compute", counted("clips_encoded", FeatureCache.compute))
    log, progress = MetricsLog.log, loop.make_progress

    def log_line(self: MetricsLog, *args: Any, **kwargs: Any) -> None:
        counts["metrics_lines"] += self._file is not None  # a process that is not the main one writes none
        log(self, *args, **kwargs)

    def make_progress(*, disable: bool | None = None, **kwargs: Any) -> Any:
        counts["progress_shown"] += disable is not True
        return progress(disable=disable, **kwargs)

    patch.setattr(MetricsLog, "log", log_line)
    patch.setattr(loop, "make_progress", make_progress)


def main(root: Path) -> None:
    """Every job at 2 processes into ``root/launched``, and this rank's record."""
    import pytest
    from accelerate import PartialState

    inputs = Inputs(**json.loads((root / "inputs.json").read_text()))
    out = root / "launched"
    counts: Counter[str] = Counter()
    with pytest.MonkeyPatch.context() as patch:
        _record_writes(patch, counts)
        cli([*erm_args(inputs), "--out", str(out / "erm")])
        cli([*erm_args(inputs), "--out", str(out / "erm_resumed"), "--max-steps", str(ERM_STOP)])
        cli([*erm_args(inputs), "--out", str(out / "erm_resumed"), "--resume"])
        run_rep(inputs, out / "rep", out / "cache")
        run_eerg(inputs, out / "rep", out / "eerg", out / "cache")
        run_eerg(inputs, out / "rep", out / "eerg_resumed", out / "cache", max_steps=EERG_STOP)
        run_eerg(inputs, out / "rep", out / "eerg_resumed", out / "cache", resume=True)
        cli(index_args(inputs, out / "erm", out / "index"))
        cli(eval_args(inputs, out / "report.json"))
    state = PartialState()
    record = {"rank": state.process_index, "processes": state.num_processes, **counts}
    (out / f"rank{state.process_index}.json").write_text(json.dumps(record))


def write_inputs(root: Path, inputs: Inputs) -> None:
    (root / "inputs.json").write_text(json.dumps(asdict(inputs)))


def dropout_free_prefix(llm: Path, out: Path) -> Path:
    """A 2-position prefix for the LLM in ``llm`` with dropout off, saved to ``out``."""
    from elmd_sdk.models.llm import load_llm
    from elmd_sdk.models.prefix import PrefixConfig, PrefixEncoder

    config = replace(PrefixConfig.for_model(load_llm(str(llm))[0], pre_seq_len=2), dropout=0.0)
    PrefixEncoder(config).save(out)
    return out


def text_data(path: Path) -> Path:
    """The 8 text samples of index build and eval, as JSONL."""
    from elmd_sdk.data import write_jsonl

    write_jsonl(path, text_samples(8))
    return path


if __name__ == "__main__":
    main(Path(sys.argv[1]))
