"""``elmd-sdk train rep`` then ``train eerg`` end to end: tiny Llama and ViT folders, an ERM index on MiniLM."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from train_fakes import COLOURS, colour_samples, save_tiny_llm, write_colour_video
from typer.testing import CliRunner

from elmd_sdk.bundle import load_bundle
from elmd_sdk.chains import ELMDChain, build_prompt
from elmd_sdk.cli.main import app
from elmd_sdk.data import read_jsonl, write_jsonl
from elmd_sdk.errors import InputError
from elmd_sdk.retrievers import EncoderSource, ERMEncoder, build_index
from elmd_sdk.retrievers.encoder import ERMConfig
from elmd_sdk.trainers.examples import prompt_messages

pytestmark = pytest.mark.slow  # the index embeds with the real offline MiniLM


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    root = tmp_path_factory.mktemp("cli")
    videos = {e: write_colour_video(root / f"{e}.mp4", c, seconds=2.0) for e, c in COLOURS.items()}
    train, valid = colour_samples(videos, 2, "t"), colour_samples(videos, 1, "v")
    write_jsonl(root / "train.jsonl", train)
    write_jsonl(root / "valid.jsonl", valid)
    torch.manual_seed(0)
    vit = ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, image_size=16)
    ViTModel(vit, add_pooling_layer=False).save_pretrained(root / "vit")
    ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(root / "vit")
    erm = ERMEncoder.create(ERMConfig(s=2))  # untrained, but a complete ERM folder
    erm.save(root / "erm")
    build_index(erm, train, root / "index", source=EncoderSource(kind="erm", path=str(root / "erm")))
    return {
        "root": root,
        "train": root / "train.jsonl",
        "valid": root / "valid.jsonl",
        "llm": save_tiny_llm(root / "llm"),
        "vit": root / "vit",
        "index": root / "index",
    }


def _common(files: dict[str, Path], out: Path) -> list[str]:
    return [
        "--data", str(files["train"]), "--valid", str(files["valid"]), "--out", str(out),
        "--frames", "2", "--batch-size", "2", "--feature-cache", str(files["root"] / "cache"),
    ]  # fmt: skip


def test_rep_then_eerg_from_the_command_line(files: dict[str, Path]) -> None:
    rep, eerg = files["root"] / "rep", files["root"] / "eerg"
    args = ["train", "rep", *_common(files, rep), "--index", str(files["index"]), "--llm", str(files["llm"])]
    args += ["--visual-encoder", str(files["vit"]), "--lr", "0.01", "--labels", "happy,sad,anger"]
    result = CliRunner().invoke(app, [*args, "--max-steps", "1"])
    assert result.exit_code == 0, result.output
    assert "stopped at --max-steps; continue with --resume" in result.output
    assert not (rep / "bundle.json").exists()
    result = CliRunner().invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert "epoch 1: step 3, train loss" in result.output and "emotion accuracy" in result.output
    manifest, _ = load_bundle(rep)
    assert manifest.erm_dir == "erm" and manifest.index_dir == "index" and manifest.projector_dir == "projector"
    assert manifest.visual_encoder == str(files["vit"]) and manifest.labels == ["happy", "sad", "anger"]

    eerg_args = ["--pre-seq-len", "4", "--lr-prefix", "0.02", "--lr-projector", "0.001", "--epochs", "2"]
    result = CliRunner().invoke(app, ["train", "eerg", "--from", str(rep), *_common(files, eerg), *eerg_args])
    assert result.exit_code == 0, result.output
    assert "epoch 2: step 6" in result.output and "EERG bundle saved to" in result.output
    manifest, _ = load_bundle(eerg)
    assert manifest.pre_seq_len == 4 and manifest.erm_dir == "erm" and manifest.base_llm == str(files["llm"].resolve())

    chain = ELMDChain.from_bundle(eerg, do_sample=False, max_new_tokens=4)
    assert manifest.frames == chain.chat_model.frames == 2  # inference samples as many frames as training did
    sample = read_jsonl(files["valid"])[1]
    video = {"path": sample.video.path, "start": sample.video.start, "end": sample.video.end}
    turn = {"utterance": sample.utterance.text, "speaker": "A", "video": video}
    [demonstration] = chain.retriever.invoke(sample.utterance.text)
    template = build_prompt("en", ("happy", "sad", "anger"))
    trained_on = prompt_messages(template, sample, demonstration, use_video=True, language="en")
    assert chain.build_messages(turn, demonstration) == trained_on  # inference builds what training built
    result = chain.invoke(turn)
    scores = result.emotion_scores or {}
    assert set(scores) == {"happy", "sad", "anger"}  # the bundle's label set, not the paper's seven
    assert result.emotion == max(scores, key=scores.__getitem__)  # greedy: the most likely label
    assert result.demonstration is not None
    assert result.demonstration.metadata["utterance"] == demonstration.metadata["utterance"]  # the retriever's first


def test_missing_rep_bundle_is_a_clear_error(files: dict[str, Path]) -> None:
    missing = files["root"] / "no_such_bundle"
    result = CliRunner().invoke(app, ["train", "eerg", "--from", str(missing), *_common(files, files["root"] / "x")])
    assert isinstance(result.exception, InputError) and "no_such_bundle" in str(result.exception)


def test_eerg_without_rep_from_the_command_line(files: dict[str, Path]) -> None:
    out = files["root"] / "eerg_no_rep"
    args = ["train", "eerg", *_common(files, out), "--index", str(files["index"]), "--llm", str(files["llm"])]
    args += ["--visual-encoder", str(files["vit"]), "--labels", "happy,sad,anger", "--pre-seq-len", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    manifest, paths = load_bundle(out)
    assert paths.projector is not None and manifest.erm_dir == "erm" and manifest.labels == ["happy", "sad", "anger"]
    assert "without REP, from a freshly initialised projector" in manifest.description
    chain = ELMDChain.from_bundle(out, do_sample=False, max_new_tokens=4)
    assert chain.video_enabled and chain.retriever is not None


def test_eerg_without_rep_bundle_or_index_is_a_clear_error(tmp_path: Path) -> None:
    args = ["train", "eerg", "--data", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args)
    assert isinstance(result.exception, InputError)
    assert "--from" in str(result.exception) and "--index" in str(result.exception)
    assert "--no-retrieval" in str(result.exception)


def test_train_rep_killed_with_sigkill_resumes_to_the_uninterrupted_weights(files: dict[str, Path]) -> None:
    """A real ``kill -9`` of ``elmd-sdk train rep`` at an arbitrary moment (perhaps mid-checkpoint) loses nothing."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from elmd_sdk.io import load_tensors

    def command(out: Path) -> list[str]:
        args = ["train", "rep", *_common(files, out), "--index", str(files["index"]), "--llm", str(files["llm"])]
        args += ["--visual-encoder", str(files["vit"]), "--lr", "0.01", "--epochs", "24", "--checkpoint-every", "1"]
        return [sys.executable, "-m", "elmd_sdk.cli.main", *args]

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    reference, run = files["root"] / "rep_reference", files["root"] / "rep_killed"
    subprocess.run(command(reference), check=True, env=env, capture_output=True)
    child = subprocess.Popen(command(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (run / "checkpoint").is_dir() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)  # let it train (and write checkpoints) a little longer before the kill
    assert child.poll() is None, "the run ended before it could be killed"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (run / "bundle.json").exists()
    assert (run / "checkpoint" / "state.json").is_file()  # resume has something to continue from

    resumed = subprocess.run([*command(run), "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    expected = load_tensors(reference / "projector" / "projector.safetensors")
    result = load_tensors(run / "projector" / "projector.safetensors")
    assert expected.keys() == result.keys()
    for key in expected:
        torch.testing.assert_close(result[key], expected[key], rtol=0, atol=0)
