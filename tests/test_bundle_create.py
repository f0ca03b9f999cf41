"""``elmd-sdk bundle create`` / :func:`create_bundle`: an untuned bundle around a local model folder that the chain,
chat, serve, eval and calibrate load like any bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from erm_fakes import save_tiny_sentence_model
from llm_fakes import save_tiny_llm
from retriever_fakes import tiny_corpus
from typer.testing import CliRunner

from elmd_sdk.bundle import MANIFEST_FILE, load_bundle
from elmd_sdk.bundle.create import create_bundle
from elmd_sdk.chains import ELMDChain
from elmd_sdk.cli.main import build_app
from elmd_sdk.data import EMOTIONS, write_jsonl
from elmd_sdk.errors import InputError
from elmd_sdk.models.chat_model import ELMDChatModel
from elmd_sdk.models.llm import llm_fingerprint, load_llm
from elmd_sdk.models.quantize import Int4Linear, Int8Linear

TURN = {"utterance": "I finally got the job!", "history": ["A: How did the interview go?"]}


@pytest.fixture(scope="module")
def llm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny_llm(tmp_path_factory.mktemp("create") / "llm")


@pytest.fixture(scope="module")
def index_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index built with a (random) ERM, as ``elmd-sdk index build --erm`` makes it."""
    from elmd_sdk.retrievers import EncoderSource, build_index
    from elmd_sdk.retrievers.encoder import ERMConfig, ERMEncoder

    root = tmp_path_factory.mktemp("index")
    ERMEncoder.create(ERMConfig(base_model=save_tiny_sentence_model(root), s=2)).save(root / "erm")
    source = EncoderSource("erm", str(root / "erm"))
    with pytest.warns(UserWarning, match="hardly tells its utterances apart"):  # a random ERM: no matter here
        build_index(ERMEncoder.load(root / "erm"), tiny_corpus(), root / "index", source=source)
    return root / "index"


def test_untuned_bundle_answers_as_the_chain_over_the_same_model(tmp_path: Path, llm_folder: Path) -> None:
    manifest = create_bundle(tmp_path / "b", llm_folder, generation={"do_sample": False, "max_new_tokens": 6})
    model, tokenizer = load_llm(llm_folder)
    assert manifest.name == "b" and manifest.base_llm == str(llm_folder.resolve())
    assert manifest.base_llm_config_sha256 == llm_fingerprint(model)["config_sha256"]
    assert (manifest.prefix_dir, manifest.projector_dir, manifest.index_dir, manifest.erm_dir) == (None,) * 4
    assert (manifest.labels, manifest.language, manifest.training_data_sha256) == (list(EMOTIONS), "en", None)
    assert manifest.generation == {"do_sample": False, "max_new_tokens": 6}
    assert (manifest.dtype, manifest.quantize) == ("auto", "none")
    bundled = ELMDChain.from_bundle(tmp_path / "b").invoke(TURN)
    direct = ELMDChain(
        chat_model=ELMDChatModel(hf_model=model, tokenizer=tokenizer, do_sample=False, max_new_tokens=6),
        use_retrieval=False,
    ).invoke(TURN)
    assert bundled.emotion in EMOTIONS and bundled.demonstration is None
    assert (bundled.emotion, bundled.response, bundled.emotion_scores) == (
        direct.emotion,
        direct.response,
        direct.emotion_scores,
    )


def test_cli_writes_labels_precision_and_decoding_and_the_index_with_its_erm(
    tmp_path: Path, llm_folder: Path, index_folder: Path
) -> None:
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["happy", "sad", "anger"]))
    out = tmp_path / "bundle"
    arguments = ["bundle", "create", "--llm", str(llm_folder), "--out", str(out), "--index", str(index_folder)]
    options = ["--labels", str(labels), "--quantize", "int8", "--greedy", "--max-new-tokens", "5", "--top-p", "0.9"]
    result = CliRunner().invoke(build_app(), [*arguments, *options])
    assert result.exit_code == 0, result.output
    assert f"wrote bundle 'bundle' to {out}" in result.output
    manifest, paths = load_bundle(out)
    assert (manifest.labels, manifest.dtype, manifest.quantize) == (["happy", "sad", "anger"], "auto", "int8")
    assert manifest.generation == {"do_sample": False, "max_new_tokens": 5, "top_p": 0.9}
    assert paths.index == out / "index" and paths.erm == out / "erm" and (out / "erm" / "ssc.safetensors").is_file()
    chain = ELMDChain.from_bundle(out)
    llm = chain.chat_model.hf_model
    assert chain.chat_model.quantize == "int8" and isinstance(llm.model.layers[0].self_attn.q_proj, Int8Linear)
    result_ = chain.invoke(TURN)
    assert result_.emotion in ("happy", "sad", "anger") and result_.demonstration is not None
    assert ELMDChain.from_bundle(out, quantize="none").chat_model.quantize == "none"  # chat/serve/eval --quantize


def test_calibrate_records_a_prior_in_the_created_bundle(tmp_path: Path, llm_folder: Path) -> None:
    create_bundle(tmp_path / "b", llm_folder, labels=("happy", "sad"), generation={"do_sample": False})
    data = tmp_path / "valid.jsonl"
    write_jsonl(data, tiny_corpus(n_dialogues=1))
    result = CliRunner().invoke(build_app(), ["calibrate", "--bundle", str(tmp_path / "b"), "--data", str(data)])
    assert result.exit_code == 0, result.output
    prior = load_bundle(tmp_path / "b")[0].emotion_log_prior
    assert prior is not None and sorted(prior) == ["happy", "sad"]


def test_settings_are_checked_before_the_llm_loads(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    with pytest.raises(InputError, match="field 'language'"):
        create_bundle(tmp_path / "b", missing, language="fr")
    with pytest.raises(InputError, match="field 'labels': must not repeat a label"):
        create_bundle(tmp_path / "b", missing, labels=("happy", "happy"))
    with pytest.raises(InputError, match="field 'quantize'"):
        create_bundle(tmp_path / "b", missing, quantize="int2")
    with pytest.raises(InputError, match="field 'temperature'"):
        create_bundle(tmp_path / "b", missing, generation={"temperature": -1.0})
    with pytest.raises(InputError, match=r"index\.json"):
        create_bundle(tmp_path / "b", missing, index=tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="--overwrite"):
        create_bundle(tmp_path / "other", missing)
    assert not (tmp_path / "b").exists() and (tmp_path / "other" / "notes.txt").is_file()


def test_cli_refuses_a_label_file_that_is_not_a_list(tmp_path: Path, llm_folder: Path) -> None:
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps({"joy": "happy"}))
    arguments = ["bundle", "create", "--llm", str(llm_folder), "--out", str(tmp_path / "b"), "--labels", str(labels)]
    result = CliRunner().invoke(build_app(), arguments)
    assert result.exit_code != 0 and "expected a JSON list of emotion labels" in str(result.exception)
    assert not (tmp_path / "b" / MANIFEST_FILE).exists()


def test_chat_and_eval_load_the_bundle_at_the_precision_they_are_given(tmp_path: Path, llm_folder: Path) -> None:
    from elmd_sdk.cli.chat import _load
    from elmd_sdk.evaluate import EvalSettings
    from elmd_sdk.evaluate.bundles import load_chain

    create_bundle(tmp_path / "b", llm_folder, quantize="int8", generation={"do_sample": False})
    assert ELMDChain.from_bundle(tmp_path / "b").chat_model.quantize == "int8"  # the bundle's own
    chat = _load(tmp_path / "b", {"max_new_tokens": 3}, "bfloat16", "none").chat_model  # chat --dtype --quantize
    assert (chat.dtype, chat.quantize, chat.hf_model.dtype, chat.max_new_tokens) == (
        "bfloat16",
        "none",
        torch.bfloat16,
        3,
    )
    evaluated = load_chain(tmp_path / "b", EvalSettings(quantize="int4")).chat_model  # eval --quantize
    assert evaluated.quantize == "int4" and isinstance(evaluated.hf_model.model.layers[0].mlp.up_proj, Int4Linear)
    with pytest.raises(InputError, match="field 'quantize'"):
        EvalSettings(quantize="int3").validate()
