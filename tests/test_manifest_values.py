"""Manifests that passed their checks and then crashed (issue 26): every manifest is checked for types (a bool is not
an int, "thirty" is not a number) and for values the code can use (a log-prior that keeps the softmax finite), and a
JSON file nested too deeply is one :class:`InputError` naming the file, not a RecursionError."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from elmd_sdk.bundle import MANIFEST_FILE, BundleManifest, load_bundle
from elmd_sdk.chains import ELMDChain
from elmd_sdk.cli.main import main
from elmd_sdk.data import EMOTIONS
from elmd_sdk.data.labels import MIN_LOG_PRIOR
from elmd_sdk.errors import InputError, MismatchError
from elmd_sdk.io import atomic_write_json, read_json
from elmd_sdk.models.closed_set import EmotionChoice
from elmd_sdk.models.prefix import PREFIX_CONFIG, PrefixConfig, PrefixEncoder
from elmd_sdk.retrievers.encoder import CONFIG_FILE, ERMEncoder
from elmd_sdk.retrievers.index_manifest import read_manifest
from elmd_sdk.video.projector import CONFIG_FILE as PROJECTOR_CONFIG
from elmd_sdk.video.projector import VideoProjector


def _bundle(root: Path, **change: Any) -> Path:
    manifest = BundleManifest(name="b", base_llm_config_sha256="x", labels=list(EMOTIONS)).to_dict()
    atomic_write_json(root / MANIFEST_FILE, {**manifest, **change})
    return root


@pytest.mark.parametrize(
    ("value", "accepted"),
    [(-1e308, False), (MIN_LOG_PRIOR - 0.5, False), (math.log(1e-300), True), (-1000.0, True), (0.0, True)],
)
def test_a_log_prior_must_keep_the_calibrated_softmax_finite(tmp_path: Path, value: float, accepted: bool) -> None:
    prior = dict.fromkeys(EMOTIONS, value)
    if accepted:
        assert load_bundle(_bundle(tmp_path, emotion_log_prior=prior))[0].label_log_prior() == (value,) * 7
        return
    with pytest.raises(InputError, match="log-probabilities between -1000 and 0") as error:
        load_bundle(_bundle(tmp_path, emotion_log_prior=prior))
    assert (error.value.file, error.value.field) == (str(tmp_path / MANIFEST_FILE), "emotion_log_prior")
    with pytest.raises(InputError, match="between -1000 and 0"):
        EmotionChoice(labels=("a", "b"), lines=("A", "B"), response_key="R", log_prior=(value, 0.0))


def test_a_chain_refuses_a_prior_that_would_make_the_probabilities_nan(chat: Any) -> None:
    with pytest.raises(ValidationError, match=r"emotion_log_prior.*between -1000 and 0"):
        ELMDChain(chat_model=chat, emotion_log_prior=(-1e308,) * 7)
    lowest = ELMDChain(chat_model=chat, emotion_log_prior=(-1000.0,) * 6 + (0.0,), use_retrieval=False)
    scores = lowest.invoke("hi").emotion_scores or {}
    assert all(math.isfinite(p) for p in scores.values()) and sum(scores.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"format_version": True}, "format_version"),
        ({"frames": True}, "frames"),
        ({"pre_seq_len": True, "prefix_dir": "prefix"}, "pre_seq_len"),
    ],
)
def test_a_bool_is_not_an_int_in_a_bundle(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as error:
        load_bundle(_bundle(tmp_path, **change))
    assert error.value.field == field


def test_json_nested_too_deeply_is_one_error_naming_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / MANIFEST_FILE).write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    with pytest.raises(InputError) as error:
        load_bundle(tmp_path)
    assert str(error.value) == f"{tmp_path / MANIFEST_FILE}: JSON nested too deeply to read"
    monkeypatch.setattr(sys, "argv", ["elmd-sdk", "serve", "--bundle", str(tmp_path), "--port", "0"])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    assert err.splitlines()[-1] == f"error: {tmp_path / MANIFEST_FILE}: JSON nested too deeply to read"
    (tmp_path / "big.json").write_text('{"n": ' + "9" * 5000 + "}", encoding="utf-8")
    with pytest.raises(InputError, match="not valid UTF-8 JSON"):
        read_json(tmp_path / "big.json")


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"num_layers": "thirty"}, "num_layers"),
        ({"num_layers": True}, "num_layers"),
        ({"head_dim": 8.0}, "head_dim"),
        ({"dropout": "0.1"}, "dropout"),
        ({"dropout": 2.0}, "dropout"),
        ({"prefix_projection": 1}, "prefix_projection"),
        ({"base_config_sha256": 5}, "base_config_sha256"),
        ({"rows": 3}, "rows"),
    ],
)
def test_prefix_json_is_typed(tmp_path: Path, change: dict[str, Any], field: str) -> None:
    PrefixEncoder(PrefixConfig(pre_seq_len=2, num_layers=2, num_kv_heads=2, head_dim=4)).save(tmp_path)
    saved = read_json(tmp_path / PREFIX_CONFIG)
    atomic_write_json(tmp_path / PREFIX_CONFIG, {**saved, **change})
    with pytest.raises(InputError) as error:
        PrefixEncoder.load(tmp_path)
    assert (error.value.file, error.value.field) == (str(tmp_path / PREFIX_CONFIG), field)


def test_index_erm_and_projector_manifests_are_typed(tmp_path: Path) -> None:
    index = tmp_path / "index"
    index.mkdir()
    atomic_write_json(index / "index.json", {"format_version": True})
    with pytest.raises(InputError) as error:
        read_manifest(index)
    assert error.value.field == "format_version"

    erm = tmp_path / "erm"
    erm.mkdir()
    info = {"format": "elmd-erm", "version": 1, "config": {}, "files": {}, "base_dim": "thirty"}
    atomic_write_json(erm / CONFIG_FILE, info)
    with pytest.raises(InputError) as error:
        ERMEncoder.load(erm)
    assert (error.value.file, error.value.field) == (str(erm / CONFIG_FILE), "base_dim")
    atomic_write_json(erm / CONFIG_FILE, {**info, "base_dim": 8, "config": {"tau": "0.5"}})
    with pytest.raises(InputError) as error:
        ERMEncoder.load(erm)
    assert error.value.field == "tau"
    atomic_write_json(erm / CONFIG_FILE, {**info, "version": True})
    with pytest.raises(MismatchError, match="ERM format version True"):
        ERMEncoder.load(erm)

    projector = tmp_path / "projector"
    projector.mkdir()
    meta = {"format": "elmd-video-projector", "q": True, "hidden_size": 8, "encoder": {}, "llm": {}}
    atomic_write_json(projector / PROJECTOR_CONFIG, {**meta, "weights_sha256": "0"})
    with pytest.raises(InputError) as error:
        VideoProjector.load(projector)
    assert error.value.field == "q"
