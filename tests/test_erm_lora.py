"""An ERM whose base encoder trains through LoRA adapters (``ERMConfig.lora_rank``), on a tiny random
sentence-transformers model (1 BERT layer, hidden 32): what trains, what is saved, what loading refuses."""

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
from elmd_sdk.trainers.erm import ERMTrainConfig, erm_train_defaults, train_erm


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    return save_tiny_sentence_model(tmp_path_factory.mktemp("tiny"))


def test_lora_rank_must_be_positive_and_needs_a_trained_encoder() -> None:
    with pytest.raises(InputError, match="must not be negative") as error:
        ERMConfig(lora_rank=-1).validate()
    assert error.value.field == "lora_rank"
    with pytest.raises(InputError, match="frozen base encoder has no LoRA adapter") as error:
        ERMConfig(lora_rank=2, freeze_encoder=True).validate()
    assert error.value.field == "lora_rank"


def test_only_the_adapters_and_the_ssc_train_and_lower_the_loss(tiny_model: str, tmp_path: Path) -> None:
    erm = ERMConfig(base_model=tiny_model, s=2, lora_rank=2)
    engine = replace(erm_train_defaults(), batch_size=8, epochs=4, progress=False)
    config = ERMTrainConfig(erm=erm, lr=1e-2, train=engine)
    train = emotion_samples(8)
    texts = [s.utterance.text for s in train[::2]]
    torch.manual_seed(config.train.seed)  # the same initial weights train_erm starts from
    fresh = ERMEncoder.create(erm)
    adapters = fresh.trained_base_state()
    # query and value of the one layer, A (rank x 32) and B (32 x rank) each
    assert sorted(tuple(t.shape) for t in adapters.values()) == [(2, 32), (2, 32), (32, 2), (32, 2)]
    assert all("lora_" in key for key in adapters)
    before = fixed_batch_loss(fresh, train)
    result = train_erm(config, train, None, tmp_path / "erm")
    assert fixed_batch_loss(result.encoder, train) < before
    base = ERMEncoder.plain(tiny_model).model.state_dict()
    trained = result.encoder.model.state_dict()
    changed = [k for k in trained if "lora_" in k and not torch.equal(trained[k], fresh.model.state_dict()[k])]
    assert changed  # the adapters learned ...
    for key, value in base.items():  # ... and the base weights are the plain model's (PEFT names them base_layer)
        module, _, leaf = key.rpartition(".")
        torch.testing.assert_close(trained[key] if key in trained else trained[f"{module}.base_layer.{leaf}"], value)
    files = sorted(p.name for p in (tmp_path / "erm").iterdir())
    assert "lora.safetensors" in files and "ssc.safetensors" in files and "encoder" not in files
    loaded = ERMEncoder.load(tmp_path / "erm")  # the base by name, then the adapters
    np.testing.assert_array_equal(loaded.encode(texts), result.encoder.encode(texts))
    assert loaded.fingerprint() == result.encoder.fingerprint()


def test_adapters_of_another_rank_or_a_damaged_file_are_refused(tiny_model: str, tmp_path: Path) -> None:
    ERMEncoder.create(ERMConfig(base_model=tiny_model, s=2, lora_rank=2)).save(tmp_path / "erm")
    config_path = tmp_path / "erm" / "erm_config.json"
    info = json.loads(config_path.read_text())
    info["config"]["lora_rank"] = 4
    config_path.write_text(json.dumps(info))
    with pytest.raises(MismatchError, match="do not fit a rank-4 LoRA"):
        ERMEncoder.load(tmp_path / "erm")
    info["config"]["lora_rank"] = 2
    config_path.write_text(json.dumps(info))
    lora = tmp_path / "erm" / "lora.safetensors"
    data = lora.read_bytes()
    lora.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))  # one byte of the last tensor changed
    with pytest.raises(InputError, match=r"does not match erm_config\.json"):
        ERMEncoder.load(tmp_path / "erm")


def test_an_erm_without_lora_keeps_the_fingerprint_indexes_were_built_with(tiny_model: str) -> None:
    plain = ERMEncoder.create(ERMConfig(base_model=tiny_model, s=2)).fingerprint()["config"]
    assert plain == {"base_model": tiny_model, "s": 2, "use_ssc": True, "use_ert": True, "freeze_encoder": False,
                     "tau": 0.5, "lambda_": 1.0}  # fmt: skip
    assert ERMEncoder.create(ERMConfig(base_model=tiny_model, s=2, lora_rank=2)).fingerprint()["config"] == {
        **plain,
        "lora_rank": 2,
    }
