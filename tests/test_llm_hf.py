"""load_llm on plain transformers folders: a tiny random Llama with a word-level tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from llm_fakes import tiny_llama
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from elmd_sdk.errors import InputError
from elmd_sdk.models import PrefixConfig, PrefixEncoder, llm_fingerprint, load_llm, prefix_encoder_of

WORDS = ["<unk>", "<s>", "</s>", "hello", "world", "how", "are", "you", "fine", "thanks"]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("llama")
    model = tiny_llama(vocab_size=len(WORDS), intermediate_size=48, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model.save_pretrained(folder)
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(folder)
    return folder


def test_plain_llama_folder_loads(llama_dir: Path) -> None:
    model, tokenizer = load_llm(llama_dir)
    assert type(model).__name__ == "LlamaForCausalLM" and not model.training
    ids = tokenizer("hello world how are you", return_tensors="pt").input_ids
    assert ids.tolist() == [[3, 4, 5, 6, 7]]
    with torch.no_grad():
        assert model(input_ids=ids).logits.shape == (1, 5, len(WORDS))
    out = model.generate(input_ids=ids, max_new_tokens=3, do_sample=False, eos_token_id=None)
    assert out.shape == (1, 8)
    fingerprint = llm_fingerprint(model)
    assert fingerprint["name_or_path"] == str(llama_dir) and fingerprint["hidden_size"] == 32
    assert len(fingerprint["config_sha256"]) == 64


def test_dtype_argument(llama_dir: Path) -> None:
    model, _ = load_llm(llama_dir, dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16


def test_our_prefix_is_applied_on_load(tmp_path: Path, llama_dir: Path) -> None:
    base, _ = load_llm(llama_dir)
    PrefixEncoder(PrefixConfig.for_model(base, pre_seq_len=4)).save(tmp_path / "prefix")
    model, _ = load_llm(llama_dir, prefix=tmp_path / "prefix")
    assert prefix_encoder_of(model) is not None
    ids = torch.tensor([[3, 4, 5]])
    with torch.no_grad():
        assert (model(input_ids=ids).logits - base(input_ids=ids).logits).abs().max() > 1e-4


def test_missing_or_wrong_paths_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError):
        load_llm(tmp_path / "no-such-model")
    (tmp_path / "weights.txt").write_text("x")
    with pytest.raises(InputError, match=r"weights\.txt"):
        load_llm(tmp_path / "weights.txt")


def test_pickle_only_checkpoints_need_an_explicit_opt_in(llama_dir: Path, tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(llama_dir, folder)
    state = {k: v.contiguous() for k, v in load_llm(llama_dir)[0].state_dict().items()}
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"pickle-format weights only \(pytorch_model.bin\).*allow_pickle_weights"):
        load_llm(folder)  # only safetensors unless the user opts in
    model, _ = load_llm(folder, allow_pickle_weights=True)
    torch.testing.assert_close(model.state_dict()["lm_head.weight"], state["lm_head.weight"])
