"""Values that used to crash deep inside (issue 26): text that is not valid Unicode (a lone surrogate) reaching the
tokenizer, and decoding settings out of range at construction or per call. Each is an :class:`InputError` naming
the field, with the same range and message wherever the value comes in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from pydantic import ValidationError

from elmd_sdk.bundle import BundleManifest, load_bundle, save_manifest
from elmd_sdk.chains import ELMDChain
from elmd_sdk.data import EMOTIONS
from elmd_sdk.errors import InputError, input_error
from elmd_sdk.io import atomic_write_json
from elmd_sdk.models.chat_model import ELMDChatModel
from elmd_sdk.models.generation import SEED_MAX
from elmd_sdk.text_checks import check_text

BAD = "hi \ud800 there"


def test_check_text_passes_valid_text_and_names_the_field_of_a_lone_surrogate() -> None:
    assert check_text("héllo 你好 😀", "utterance") == "héllo 你好 😀"
    with pytest.raises(InputError) as error:
        check_text(BAD, "history[2]")
    assert error.value.field == "history[2]"
    assert str(error.value) == (
        "field 'history[2]': holds '\\ud800' at character 3, which is not valid Unicode text (a lone surrogate)"
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"utterance": BAD}, "utterance"),
        ({"history": ["fine", BAD]}, "history[1]"),
        ({"history": [{"role": "user", "content": BAD}]}, "history[0].content"),
        ({"history": [{"speaker": "A", "text": BAD}]}, "history[0].text"),
        ({"history": [{"speaker": BAD, "text": "fine"}]}, "history[0].speaker"),
        ({"background": BAD}, "background"),
        ({"speaker": BAD}, "speaker"),
    ],
)
def test_a_lone_surrogate_in_chain_input_names_the_field(chain: ELMDChain, change: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError, match="lone surrogate") as error:
        chain.invoke({"utterance": "hello", **change})
    assert error.value.field == field


@pytest.mark.parametrize(
    ("messages", "field"),
    [
        ([HumanMessage(BAD)], "messages[0].content"),
        ([SystemMessage(BAD), HumanMessage("hi")], "messages[0].content"),
        ([HumanMessage("hi"), AIMessage("ok"), HumanMessage([{"type": "text", "text": BAD}])], "messages[2].content"),
    ],
)
def test_a_lone_surrogate_in_chat_messages_names_the_message(chat: ELMDChatModel, messages: list, field: str) -> None:
    with pytest.raises(InputError, match="lone surrogate") as error:
        chat.invoke(messages)
    assert error.value.field == field
    with pytest.raises(InputError, match="lone surrogate"):
        chat.get_num_tokens_from_messages(messages)
    with pytest.raises(InputError, match="lone surrogate") as error:
        chat.get_num_tokens(BAD)
    assert error.value.field == "text"
    with pytest.raises(InputError, match="lone surrogate") as error:
        chat.invoke("hi", avoid_copying=["fine", BAD])
    assert error.value.field == "avoid_copying[1]"


OUT_OF_RANGE = [
    ("seed", 2**70, "less than or equal to 18446744073709551615"),
    ("seed", -1, "greater than or equal to 0"),
    ("seed", True, "valid integer"),
    ("temperature", -1, "greater than or equal to 0"),
    ("temperature", float("nan"), "finite number"),
    ("top_p", 0, "greater than 0"),
    ("top_p", 1.5, "less than or equal to 1"),
    ("top_k", -1, "greater than or equal to 0"),
    ("max_new_tokens", 0, "greater than 0"),
    ("max_new_tokens", 2.0, "valid integer"),
    ("do_sample", "yes", "valid boolean"),
    ("repetition_penalty", 0, "greater than 0"),
    ("no_repeat_ngram_size", -2, "greater than or equal to 0"),
    ("min_new_tokens", -1, "greater than or equal to 0"),
    ("copy_guard_ngram", 0, "greater than or equal to 1"),
]


@pytest.mark.parametrize(("name", "value", "message"), OUT_OF_RANGE)
def test_a_setting_out_of_range_is_refused_alike_at_construction_and_per_call(
    chat: ELMDChatModel, chain: ELMDChain, name: str, value: Any, message: str
) -> None:
    with pytest.raises(ValidationError) as built:
        ELMDChatModel(hf_model=chat.hf_model, tokenizer=chat.tokenizer, **{name: value})
    construction = input_error(built.value)
    assert construction.field == name and message in construction.problem
    with pytest.raises(InputError) as per_call:
        chat.invoke("hi", **{name: value})
    assert (per_call.value.field, per_call.value.problem) == (name, construction.problem)
    with pytest.raises(InputError) as through_chain:
        chain.invoke("hi", **{name: value})
    assert (through_chain.value.field, through_chain.value.problem) == (name, construction.problem)


def test_the_largest_seed_torch_takes_is_accepted_and_max_tokens_is_checked_as_max_new_tokens(
    chat: ELMDChatModel,
) -> None:
    assert chat.invoke("hi", seed=SEED_MAX, max_new_tokens=2).content == chat.invoke("hi", max_new_tokens=2).content
    assert chat.invoke("hi", seed=0, max_tokens=1).usage_metadata["output_tokens"] == 1  # type: ignore[index]
    with pytest.raises(InputError) as error:
        chat.invoke("hi", max_tokens=0)
    assert error.value.field == "max_new_tokens"


@pytest.mark.parametrize(
    ("generation", "message"),
    [
        ({"seed": 2**70}, "seed: Input should be less than or equal to 18446744073709551615"),
        ({"temperature": -1}, "temperature: Input should be greater than or equal to 0"),
        ({"top_k": True}, "top_k: Input should be a valid integer"),
        ({"temperature": None}, "a setting must not be null"),
        ({"beams": 3}, "beams: unknown setting"),
    ],
)
def test_a_bundle_records_only_settings_the_chat_model_accepts(
    tmp_path: Path, generation: dict[str, Any], message: str
) -> None:
    manifest = BundleManifest(name="b", base_llm_config_sha256="x", labels=list(EMOTIONS))
    atomic_write_json(tmp_path / "bundle.json", {**manifest.to_dict(), "generation": generation})
    with pytest.raises(InputError, match=message) as error:
        load_bundle(tmp_path)
    assert (error.value.file, error.value.field) == (str(tmp_path / "bundle.json"), "generation")
    with pytest.raises(InputError):
        save_manifest(
            tmp_path, BundleManifest(name="b", base_llm_config_sha256="x", labels=["a"], generation=generation)
        )
