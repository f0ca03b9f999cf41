"""ERM encoder and trainer on a tiny random sentence-transformers model: save/load, errors, training, resume, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from erm_fakes import emotion_samples, fixed_batch_loss, save_tiny_sentence_model

from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.retrievers.encoder import ERMConfig, ERMEncoder
from elmd_sdk.trainers import erm as erm_trainer
from elmd_sdk.trainers.curves import CURVES_FILE
from elmd_sdk.trainers.erm import (
    ERMTrainConfig,
    emotion_match_at_1,
    epoch_batches,
    erm_train_defaults,
    train_erm,
)
from elmd_sdk.trainers.metrics_log import METRICS_FILE, TRACKER_DIR, read_metrics


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A random 1-layer BERT (hidden 32) with a character vocabulary, saved as a sentence-transformers folder."""
    return save_tiny_sentence_model(tmp_path_factory.mktemp("tiny"))


def _config(tiny_model: str, **kwargs) -> ERMTrainConfig:
    erm_keys = {"s", "use_ssc", "use_ert", "freeze_encoder", "tau", "lambda_", "lora_rank"}
    erm = ERMConfig(base_model=tiny_model, **{k: v for k, v in kwargs.items() if k in erm_keys})
    engine = replace(erm_train_defaults(), batch_size=8, progress=False)
    engine = replace(engine, **{k: v for k, v in kwargs.items() if hasattr(engine, k)})
    return ERMTrainConfig(erm=erm, lr=kwargs.get("lr", 1e-3), train=engine)


def _weights(encoder: ERMEncoder) -> dict[str, torch.Tensor]:
    return {f"{i}.{k}": v for i, m in enumerate(encoder.modules()) for k, v in m.state_dict().items()}


def test_encode_shapes_and_norms(tiny_model: str) -> None:
    texts = ["joy glad", "cry tears", "rage"]
    full = ERMEncoder.create(ERMConfig(base_model=tiny_model, s=4))
    vecs = full.encode(texts, batch_size=2)
    assert full.dim == 4 * 32 and vecs.shape == (3, 128) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    plain = ERMEncoder.plain(tiny_model)
    assert plain.dim == 32 and plain.ssc is None and plain.encode(texts).shape == (3, 32)
    assert full.encode([]).shape == (0, 128)


def test_save_load_round_trip(tiny_model: str, tmp_path: Path) -> None:
    encoder = ERMEncoder.create(ERMConfig(base_model=tiny_model, s=2))
    texts = ["joy glad great", "cry alone", "hate stop"]
    encoder.save(tmp_path / "erm")
    loaded = ERMEncoder.load(tmp_path / "erm")
    np.testing.assert_array_equal(loaded.encode(texts), encoder.encode(texts))
    assert loaded.fingerprint() == encoder.fingerprint()
    assert json.loads(json.dumps(loaded.fingerprint())) == loaded.fingerprint()
    suffixes = {p.suffix for p in (tmp_path / "erm").rglob("*") if p.is_file()}
    assert suffixes <= {".json", ".safetensors"}, suffixes
    other = ERMEncoder.create(ERMConfig(base_model=tiny_model, s=2))
    assert other.fingerprint()["weights_sha256"] != encoder.fingerprint()["weights_sha256"]


def test_frozen_encoder_erm_saves_without_its_encoder_copy(tiny_model: str, tmp_path: Path) -> None:
    from elmd_sdk.errors import ElmdError

    frozen = ERMEncoder.create(ERMConfig(base_model=tiny_model, s=2, freeze_encoder=True))
    frozen.save(tmp_path / "full")
    frozen.save(tmp_path / "slim", with_encoder=False)
    assert (tmp_path / "full" / "encoder").is_dir() and not (tmp_path / "slim" / "encoder").exists()
    slim = ERMEncoder.load(tmp_path / "slim")  # base model re-loaded by the name in its config
    texts = ["joy glad great", "cry alone"]
    np.testing.assert_array_equal(slim.encode(texts), ERMEncoder.load(tmp_path / "full").encode(texts))
    assert slim.fingerprint() == frozen.fingerprint()
    tuned = ERMEncoder.create(ERMConfig(base_model=tiny_model, s=2))
    with pytest.raises(ElmdError, match="frozen or LoRA-adapted base encoder"):
        tuned.save(tmp_path / "tuned", with_encoder=False)
    config = json.loads((tmp_path / "slim" / "erm_config.json").read_text())
    config["config"]["freeze_encoder"] = False
    (tmp_path / "slim" / "erm_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"missing encoder/ \(only an ERM with a frozen or LoRA"):
        ERMEncoder.load(tmp_path / "slim")


def test_damaged_erm_dirs_give_clear_errors(tiny_model: str, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not an ERM directory"):
        ERMEncoder.load(tmp_path / "nothing")
    erm_dir = tmp_path / "erm"
    ERMEncoder.create(ERMConfig(base_model=tiny_model, s=2)).save(erm_dir)
    config_path = erm_dir / "erm_config.json"
    original = config_path.read_text()

    data = (erm_dir / "ssc.safetensors").read_bytes()
    (erm_dir / "ssc.safetensors").write_bytes(data[:-8] + b"\x00" * 8)
    with pytest.raises(InputError, match=r"ssc\.safetensors.*damaged"):
        ERMEncoder.load(erm_dir)

    info = json.loads(original)
    info["config"]["bogus"] = 1
    config_path.write_text(json.dumps(info))
    with pytest.raises(InputError, match="field 'bogus'"):
        ERMEncoder.load(erm_dir)

    info = json.loads(original)
    info["format"] = "something-else"
    config_path.write_text(json.dumps(info))
    with pytest.raises(MismatchError, match="not an elmd-sdk ERM"):
        ERMEncoder.load(erm_dir)

    config_path.write_text("{ not json")
    with pytest.raises(InputError, match=r"erm_config\.json:1: not valid"):
        ERMEncoder.load(erm_dir)
    config_path.unlink()
    with pytest.raises(InputError, match=r"erm_config\.json: file not found"):
        ERMEncoder.load(erm_dir)


def test_unknown_base_model_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="field 'base_model'"):
        ERMEncoder.plain(str(tmp_path / "no-such-model"))


def test_epoch_batches_pair_same_emotions_deterministically() -> None:
    emotions = ["a"] * 5 + ["b"] * 4 + ["c"]  # "c" has no partner: never an anchor
    batches = epoch_batches(emotions, batch_size=4, seed=3, epoch=1)
    assert batches == epoch_batches(emotions, batch_size=4, seed=3, epoch=1)
    assert batches != epoch_batches(emotions, batch_size=4, seed=3, epoch=2)
    anchors = [b[i] for b in batches for i in range(0, len(b), 2)]
    assert sorted(anchors) == list(range(9))
    for batch in batches:
        for anchor, partner in zip(batch[::2], batch[1::2], strict=True):
            assert anchor != partner and emotions[anchor] == emotions[partner]


def test_emotion_match_at_1_by_hand() -> None:
    corpus = np.array([[1, 0], [0, 1], [-1, 0]], dtype=np.float32)
    queries = np.array([[0.9, 0.1], [0.1, 0.9], [-1, 0.2], [0.8, 0.0]], dtype=np.float32)
    # nearest corpus rows: 0 (x), 1 (y), 2 (z), 0 (x); query emotions x, y, z, y -> hits 1, 1, 1, 0
    micro, macro = emotion_match_at_1(queries, ["x", "y", "z", "y"], corpus, ["x", "y", "z"])
    assert micro == pytest.approx(3 / 4)
    assert macro == pytest.approx((1 + 0.5 + 1) / 3)  # per emotion: x 1/1, y 1/2, z 1/1


def test_training_lowers_the_loss_and_saves_safely(tiny_model: str, tmp_path: Path) -> None:
    train, valid = emotion_samples(8), emotion_samples(3, offset=8)
    config = _config(tiny_model, epochs=4, s=2)
    texts = [s.utterance.text for s in train[::2]]
    torch.manual_seed(config.train.seed)  # the same initial weights train_erm starts from
    before = fixed_batch_loss(ERMEncoder.create(config.erm), train)
    result = train_erm(config, train, valid, tmp_path / "erm")
    assert result.completed and len(result.history) == 4
    assert fixed_batch_loss(result.encoder, train) < before
    assert result.history[-1].train_loss < result.history[0].train_loss
    last = result.history[-1]
    assert last.valid_match_micro is not None and 0 <= last.valid_match_micro <= 1
    assert last.valid_match_macro is not None and 0 <= last.valid_match_macro <= 1
    out_files = [p for p in (tmp_path / "erm").rglob("*") if p.is_file()]
    assert {p.suffix for p in out_files} <= {".json", ".jsonl", ".safetensors"}
    assert [p.name for p in out_files if p.suffix == ".jsonl"] == [METRICS_FILE]  # JSON lines, no pickle
    assert not (tmp_path / "erm" / "checkpoint").exists()
    loaded = ERMEncoder.load(tmp_path / "erm")
    np.testing.assert_array_equal(loaded.encode(texts), result.encoder.encode(texts))


@pytest.mark.parametrize(
    ("schedule", "expected"), [("linear", [1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6]), ("constant", [1] * 6)]
)
def test_learning_rate_schedule(
    tiny_model: str, tmp_path: Path, monkeypatch, schedule: str, expected: list[float]
) -> None:
    seen: list[float] = []
    real_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        seen.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    config = _config(tiny_model, epochs=2, lr_schedule=schedule)  # 3 steps per epoch
    train_erm(config, emotion_samples(4), None, tmp_path / "erm")
    assert seen == pytest.approx([1e-3 * f for f in expected])
    with pytest.raises(InputError, match="lr_schedule"):
        _config(tiny_model, lr_schedule="cosine").validate()


def _recording_step_losses(monkeypatch) -> list[float]:
    """The Eq. 4 loss of every optimizer step train_erm takes from now on, in order."""
    losses: list[float] = []
    real_batch_loss = erm_trainer.batch_loss

    def recording(*args, **kwargs):
        loss = real_batch_loss(*args, **kwargs)
        losses.append(loss.item())
        return loss

    monkeypatch.setattr(erm_trainer, "batch_loss", recording)
    return losses


def _lines(out: Path, kind: str) -> list[dict]:
    return [r for r in read_metrics(out / METRICS_FILE) if r["kind"] == kind]


def test_metrics_log_holds_interval_mean_losses_and_validations(tiny_model: str, tmp_path: Path, monkeypatch) -> None:
    train, valid = emotion_samples(4), emotion_samples(2, offset=4)  # 3 steps per epoch, 6 in all
    losses = _recording_step_losses(monkeypatch)
    config = _config(tiny_model, epochs=2, logging_steps=4, eval_every=2)
    result = train_erm(config, train, valid, tmp_path / "erm")
    assert len(losses) == 6
    lines = _lines(tmp_path / "erm", "train")  # survived the final folder swap
    assert [r["step"] for r in lines] == [4, 6]  # ceil(6 / 4) lines: the last interval is steps 5-6
    assert [r["loss"] for r in lines] == pytest.approx([np.mean(losses[:4]), np.mean(losses[4:])], rel=1e-12)
    assert [r["lr"] for r in lines] == pytest.approx([1e-3 * 3 / 6, 1e-3 * 1 / 6])  # the interval's last step's lr
    assert [r["epoch"] for r in lines] == pytest.approx([4 / 3, 2.0])
    assert all(r["samples_per_s"] > 0 for r in lines)
    validations = _lines(tmp_path / "erm", "valid")
    assert [r["step"] for r in validations] == [2, 3, 4, 6]  # every 2 steps and at each epoch end, once each
    assert [set(r) for r in validations] == [{"step", "kind", "time", "match_micro", "match_macro"}] * 4
    at_epoch_ends = [(r["match_micro"], r["match_macro"]) for r in validations if r["step"] in (3, 6)]
    assert at_epoch_ends == [(h.valid_match_micro, h.valid_match_macro) for h in result.history]

    plain = train_erm(_config(tiny_model, epochs=2), train, valid, tmp_path / "plain")  # validations change nothing
    for key, value in _weights(plain.encoder).items():
        torch.testing.assert_close(_weights(result.encoder)[key], value, rtol=0, atol=0)
    assert [r["step"] for r in _lines(tmp_path / "plain", "train")] == [6]  # logging_steps 10: one partial interval
    for setting, field in (({"logging_steps": 0}, "logging_steps"), ({"eval_every": 0}, "eval_every")):
        with pytest.raises(InputError, match="must be at least 1") as error:
            _config(tiny_model, **setting).validate()
        assert error.value.field == field
    with pytest.raises(InputError, match="unknown tracker 'tb'"):
        _config(tiny_model, report_to=("tb",)).validate()


def test_metrics_log_after_max_steps_and_after_a_kill_has_each_step_once(
    tiny_model: str, tmp_path: Path, monkeypatch
) -> None:
    train, config = emotion_samples(4), _config(tiny_model, epochs=2, logging_steps=2)  # 3 steps per epoch, 6 in all
    losses = _recording_step_losses(monkeypatch)

    def train_lines(out: Path) -> tuple[list[int], list[float]]:
        lines = _lines(out, "train")
        return [r["step"] for r in lines], [r["loss"] for r in lines]

    train_erm(config, train, None, tmp_path / "ref")
    ref = list(losses)  # resumed runs take the same steps (test_resume_after_kill_matches_uninterrupted)
    expected = np.mean(ref[0:2]), np.mean(ref[2:4]), np.mean(ref[4:6])
    assert train_lines(tmp_path / "ref") == ([2, 4, 6], pytest.approx(expected, rel=1e-12))

    stopped = tmp_path / "stopped"  # --max-steps 3 logs the partial interval of step 3; resuming replaces it
    train_erm(_config(tiny_model, epochs=2, logging_steps=2, max_steps=3), train, None, stopped)
    assert train_lines(stopped) == ([2, 3], pytest.approx([np.mean(ref[0:2]), ref[2]], rel=1e-12))
    train_erm(config, train, None, stopped, resume=True)
    assert train_lines(stopped) == ([2, 4, 6], pytest.approx(expected, rel=1e-12))  # as if never stopped

    killed = tmp_path / "killed"  # killed in step 5; its checkpoint (step 3) holds the unlogged loss of step 3
    real_batch_loss, start = erm_trainer.batch_loss, len(losses)

    def killed_in_step_5(*args, **kwargs):
        if len(losses) - start == 4:
            raise KeyboardInterrupt
        return real_batch_loss(*args, **kwargs)

    monkeypatch.setattr(erm_trainer, "batch_loss", killed_in_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_erm(config, train, None, killed)
    assert train_lines(killed)[0] == [2, 4]  # step 4's line was on disk before the kill
    monkeypatch.setattr(erm_trainer, "batch_loss", real_batch_loss)
    train_erm(config, train, None, killed, resume=True)
    assert train_lines(killed) == ([2, 4, 6], pytest.approx(expected, rel=1e-12))  # as if never killed


@pytest.mark.parametrize("lora_rank", [0, 2])  # all the base encoder's weights train, or its LoRA adapters
def test_resume_after_kill_matches_uninterrupted(tiny_model: str, tmp_path: Path, monkeypatch, lora_rank: int) -> None:
    train = emotion_samples(4)  # 12 utterances, batch 8 = 4 pairs -> 3 steps per epoch
    config = _config(tiny_model, epochs=2, checkpoint_every=2, lora_rank=lora_rank)
    reference = train_erm(config, train, None, tmp_path / "ref")

    calls = {"n": 0}
    real_batch_loss = erm_trainer.batch_loss

    def killed_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # checkpoints exist after steps 2, 3 (epoch end) and 4
            raise KeyboardInterrupt
        return real_batch_loss(*args, **kwargs)

    monkeypatch.setattr(erm_trainer, "batch_loss", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train_erm(config, train, None, tmp_path / "run")
    monkeypatch.setattr(erm_trainer, "batch_loss", real_batch_loss)
    assert json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())["meta"]["global_step"] == 4
    with pytest.raises(InputError, match="unfinished run"):
        train_erm(config, train, None, tmp_path / "run")
    torch.manual_seed(123)  # a new process starts from another RNG state
    resumed = train_erm(config, train, None, tmp_path / "run", resume=True)
    ref_w, res_w = _weights(reference.encoder), _weights(resumed.encoder)
    assert ref_w.keys() == res_w.keys()
    for key in ref_w:
        torch.testing.assert_close(res_w[key], ref_w[key], rtol=0, atol=0)
    assert [h.train_loss for h in resumed.history] == [h.train_loss for h in reference.history]


def test_max_steps_then_resume_and_changed_settings(tiny_model: str, tmp_path: Path) -> None:
    train = emotion_samples(4)
    config = _config(tiny_model, epochs=2, max_steps=2)
    partial = train_erm(config, train, None, tmp_path / "erm")
    assert not partial.completed and (tmp_path / "erm" / "checkpoint").is_dir()
    with pytest.raises(MismatchError, match="lr"):
        train_erm(_config(tiny_model, epochs=2, lr=5e-5), train, None, tmp_path / "erm", resume=True)
    with pytest.raises(InputError, match="trained on other data") as error:
        train_erm(config, emotion_samples(5), None, tmp_path / "erm", resume=True)
    assert error.value.field == "data"
    with pytest.raises(InputError, match="nothing to resume: no checkpoint"):
        train_erm(config, train, None, tmp_path / "fresh", resume=True)  # never started: say so, do not start
    assert not (tmp_path / "fresh").exists()
    done = train_erm(_config(tiny_model, epochs=2), train, None, tmp_path / "erm", resume=True)
    assert done.completed and done.history[-1].global_step == 6
    again = train_erm(_config(tiny_model, epochs=2), train, None, tmp_path / "erm", resume=True)
    assert again.history == done.history and again.encoder.fingerprint() == done.encoder.fingerprint()
    with pytest.raises(InputError, match="already finished"):
        train_erm(_config(tiny_model, epochs=3), train, None, tmp_path / "erm", resume=True)


def test_ablation_switches(tiny_model: str, tmp_path: Path) -> None:
    train = emotion_samples(4)
    no_ssc = train_erm(_config(tiny_model, use_ssc=False, max_steps=1), train, None, tmp_path / "a").encoder
    assert no_ssc.ssc is None and no_ssc.dim == 32 and not (tmp_path / "a" / "ssc.safetensors").exists()
    no_ert = train_erm(_config(tiny_model, use_ert=False, max_steps=1), train, None, tmp_path / "b").encoder
    assert no_ert.ssc is not None and no_ert.dim == 128
    base = _weights(ERMEncoder.plain(tiny_model))
    frozen = train_erm(_config(tiny_model, freeze_encoder=True, max_steps=2), train, None, tmp_path / "c").encoder
    for key, value in frozen.model.state_dict().items():
        torch.testing.assert_close(value, base[f"0.{key}"], rtol=0, atol=0)
    with pytest.raises(InputError, match="nothing to train"):
        train_erm(_config(tiny_model, freeze_encoder=True, use_ssc=False), train, None, tmp_path / "d")
    with pytest.raises(InputError, match="at least one of ERT and SSC"):
        train_erm(_config(tiny_model, use_ert=False, use_ssc=False), train, None, tmp_path / "e")


def test_cli_train_erm(tiny_model: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from elmd_sdk.cli.main import app

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in emotion_samples(4)))
    args = ["train", "erm", "--data", str(data), "--out", str(tmp_path / "erm"), "--valid", str(data)]
    args += ["--base-model", tiny_model, "--batch-size", "8", "--s", "2", "--lambda", "0.5", "--no-ert"]
    args += ["--logging-steps", "2", "--eval-every", "2", "--report-to", "none", "--lora-rank", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "valid match@1" in result.output
    loaded = ERMEncoder.load(tmp_path / "erm")
    assert (loaded.config.s, loaded.config.lambda_, loaded.config.use_ert, loaded.config.lora_rank) == (
        2,
        0.5,
        False,
        2,
    )
    assert [(r["step"], r["kind"]) for r in read_metrics(tmp_path / "erm" / METRICS_FILE)] == [
        (2, "train"),
        (2, "valid"),
        (3, "train"),
        (3, "valid"),
    ]  # 3 steps: lines every 2 steps and at the end, validation every 2 steps and at the epoch end
    assert f"learning curves: {tmp_path / 'erm' / CURVES_FILE}" in result.output
    assert _png_shape(tmp_path / "erm" / CURVES_FILE) == (400, 1000, 4)
    assert not (tmp_path / "erm" / TRACKER_DIR).exists()


def _png_shape(path: Path) -> tuple[int, ...]:
    import matplotlib.image

    return matplotlib.image.imread(path).shape


def test_cli_max_steps_draws_the_curves_beside_the_checkpoint_and_resume_keeps_the_logs(
    tiny_model: str, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from elmd_sdk.cli.main import app

    data, out = tmp_path / "train.jsonl", tmp_path / "erm"
    data.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in emotion_samples(4)))  # 3 steps per epoch
    args = ["train", "erm", "--data", str(data), "--out", str(out), "--base-model", tiny_model, "--batch-size", "8"]
    args += ["--s", "2", "--epochs", "2", "--logging-steps", "2"]
    stopped = CliRunner().invoke(app, [*args, "--max-steps", "2"])
    assert stopped.exit_code == 0, stopped.output
    assert (out / "checkpoint").is_dir() and _png_shape(out / CURVES_FILE) == (400, 1000, 4)
    assert [r["step"] for r in read_metrics(out / METRICS_FILE)] == [2]
    (out / CURVES_FILE).write_bytes(b"stale")  # the resumed run draws its own
    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert not (out / "checkpoint").exists() and _png_shape(out / CURVES_FILE) == (400, 1000, 4)
    assert [r["step"] for r in read_metrics(out / METRICS_FILE)] == [2, 4, 6]


def test_cli_report_to_tensorboard_writes_events_that_survive_the_final_folder(tiny_model: str, tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from typer.testing import CliRunner

    from elmd_sdk.cli.main import app

    data, out = tmp_path / "train.jsonl", tmp_path / "erm"
    data.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in emotion_samples(4)))
    args = ["train", "erm", "--data", str(data), "--out", str(out), "--base-model", tiny_model, "--batch-size", "8"]
    args += ["--s", "2", "--logging-steps", "1", "--valid", str(data), "--report-to", "tensorboard"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(out / TRACKER_DIR / "erm"))
    events.Reload()
    logged = {r["step"]: r["loss"] for r in read_metrics(out / METRICS_FILE) if r["kind"] == "train"}
    assert {e.step: e.value for e in events.Scalars("train/loss")} == pytest.approx(logged, rel=1e-6)
    assert [e.step for e in events.Scalars("valid/match_macro")] == [3]


def test_cli_run_killed_with_sigkill_resumes_to_the_uninterrupted_weights(tiny_model: str, tmp_path: Path) -> None:
    """A real ``kill -9`` of ``elmd-sdk train erm`` at an arbitrary moment (perhaps mid-checkpoint) loses nothing."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in emotion_samples(8)))  # 24 utterances: 3 steps/epoch
    args = ["train", "erm", "--data", str(data), "--base-model", tiny_model, "--batch-size", "8", "--s", "2"]
    args += ["--epochs", "15", "--lr", "1e-3", "--checkpoint-every", "1"]
    command = [sys.executable, "-m", "elmd_sdk.cli.main", *args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run([*command, "--out", str(tmp_path / "ref")], check=True, env=env, capture_output=True)

    run = tmp_path / "run"
    child = subprocess.Popen([*command, "--out", str(run)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint" / "state.json").is_file() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.3)  # let it train (and write checkpoints) a little longer before the kill
    assert child.poll() is None, "the run ended before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (run / "erm_config.json").exists()  # killed before the end: no final ERM yet
    assert (run / "checkpoint" / "state.json").is_file()  # resume has something to continue from

    resumed = subprocess.run([*command, "--out", str(run), "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    reference, result = _weights(ERMEncoder.load(tmp_path / "ref")), _weights(ERMEncoder.load(run))
    assert reference.keys() == result.keys()
    for key in reference:
        torch.testing.assert_close(result[key], reference[key], rtol=0, atol=0)
    assert not (run / "checkpoint").exists()


def test_cli_ctrl_c_says_where_the_checkpoint_is(tiny_model: str, tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) during ``elmd-sdk train erm``: no traceback, the checkpoint's folder and how to go on."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(s.to_dict()) + "\n" for s in emotion_samples(8)))
    args = ["train", "erm", "--data", str(data), "--base-model", tiny_model, "--batch-size", "8", "--s", "2"]
    args += ["--epochs", "200", "--checkpoint-every", "1", "--out", str(tmp_path / "run")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "elmd_sdk.cli.main", *args], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not (tmp_path / "run" / "checkpoint" / "state.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    assert child.returncode == 130
    assert f"interrupted: the last checkpoint is in {tmp_path / 'run' / 'checkpoint'}; continue with" in err
    assert "Traceback" not in err


def test_a_pickle_only_base_encoder_needs_an_opt_in(tiny_model: str, tmp_path: Path) -> None:
    import shutil

    from elmd_sdk.io import load_tensors
    from elmd_sdk.retrievers.encoder import load_sentence_transformer

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder)
    for weights in folder.rglob("*.safetensors"):
        torch.save(load_tensors(weights), weights.with_name("pytorch_model.bin"))
        weights.unlink()
    with pytest.raises(InputError, match="cannot load sentence-transformers model"):
        load_sentence_transformer(str(folder))
    assert load_sentence_transformer(str(folder), allow_pickle_weights=True).get_sentence_embedding_dimension() == 32
