"""Model names that are not local paths: embedded models by their hub names; a fast, clear failure offline."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from elmd_sdk.errors import InputError
from elmd_sdk.hub import EMBEDDED_ENCODER_NAMES, EMBEDDED_LLM_NAMES, is_embedded, require_hub
from elmd_sdk.paths import default_encoder_path
from elmd_sdk.retrievers.encoder import resolve_base_model


def test_embedded_names_resolve_to_the_wheel_copies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert is_embedded("HuggingFaceTB/SmolLM2-135M-Instruct", EMBEDDED_LLM_NAMES)
    assert is_embedded("SmolLM2-135M-Instruct", EMBEDDED_LLM_NAMES)
    for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2", "default"):
        assert resolve_base_model(name) == str(default_encoder_path())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "all-MiniLM-L6-v2").mkdir()  # a local folder of that name is the user's own model
    assert not is_embedded("all-MiniLM-L6-v2", EMBEDDED_ENCODER_NAMES)
    assert resolve_base_model("all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"


def test_an_unknown_name_offline_fails_without_trying_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("the network was tried"))
    with pytest.raises(InputError, match="the hub is offline; pass the path of a local copy of the language model"):
        require_hub("someorg/some-model", "language model")


def test_an_unreachable_hub_is_one_quick_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    calls: list[tuple[object, ...]] = []

    def unreachable(address: tuple[str, int], timeout: float) -> None:
        calls.append((address, timeout))
        raise OSError("Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(socket, "create_connection", unreachable)
    with pytest.raises(InputError, match=r"cannot be reached .*local copy of the sentence encoder") as error:
        resolve_base_model("someorg/some-encoder")
    assert error.value.field == "someorg/some-encoder"
    assert len(calls) == 1 and calls[0][1] <= 3.0  # one connection attempt, short timeout, no retry loop


def test_local_paths_never_touch_the_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("the network was tried"))
    require_hub(str(tmp_path), "language model")


def test_a_missing_local_path_is_not_taken_for_a_hub_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("the network was tried"))
    for missing in (str(tmp_path / "llm"), "./models/llm", "~/models/llm", "a/b/c"):
        with pytest.raises(InputError, match="language model not found"):
            require_hub(missing, "language model")
