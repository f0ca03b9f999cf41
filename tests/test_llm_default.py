"""The embedded default LLM (SmolLM2-135M-Instruct GGUF): converted once into a safetensors cache, then reused."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from elmd_sdk.models import gguf_cache
from elmd_sdk.models.llm import llm_fingerprint, load_llm
from elmd_sdk.paths import DEFAULT_LLM_GGUF, default_llm_gguf


@pytest.mark.slow
def test_first_load_writes_cache_second_reads_it(elmd_home: str, monkeypatch: pytest.MonkeyPatch) -> None:
    target = gguf_cache.gguf_cache_path(default_llm_gguf())
    assert Path(elmd_home) in target.parents
    converted_here = not target.exists()  # another test of this session may have converted it already
    first, tokenizer = load_llm()
    assert (target / gguf_cache.WEIGHTS_NAME).is_file() and (target / "config.json").is_file()
    assert (target / "tokenizer.json").is_file() and (target / "chat_template.jinja").is_file()
    if converted_here:
        assert not list(target.parent.glob(".*.tmp"))  # the temporary build folder was renamed into place

    def no_conversion(*args: object) -> None:
        raise AssertionError("the cache should have been reused")

    monkeypatch.setattr(gguf_cache, "_convert", no_conversion)
    second, _ = load_llm()
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(first(input_ids=ids).logits, second(input_ids=ids).logits, rtol=0, atol=0)
    assert llm_fingerprint(second)["name_or_path"] == DEFAULT_LLM_GGUF
    assert llm_fingerprint(second) == llm_fingerprint(first)
    out = second.generate(input_ids=ids, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > ids.shape[1]
