"""Shared test set-up: offline, deterministic, small thread pools, caches in a per-session temp dir."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Training tests assert float32 values; the CPU bf16 default is tested on its own (test_train_speed_settings.py).
os.environ.setdefault("ACCELERATE_MIXED_PRECISION", "no")

import signal

import pytest
import torch

torch.set_num_threads(2)
# A suite started in the background (`nohup pytest &`) inherits SIGINT ignored, and an ignored signal stays ignored
# across exec: the Ctrl-C tests (a streaming reply, `train erm`, the terminal client) would wait for nothing. Python's
# own handler here, which a started program replaces by the default disposition, as from a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def elmd_home(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A session-wide ELMD_SDK_HOME so GGUF conversion and the default bundle are built once per run."""
    home = os.environ.get("ELMD_SDK_HOME") or str(tmp_path_factory.mktemp("elmd_home"))
    os.environ["ELMD_SDK_HOME"] = home
    return home


@pytest.fixture(scope="module")
def chat() -> Any:
    """A greedy ELMDChatModel over the tiny random LLM (12 new tokens)."""
    from chain_fakes import tiny_chat

    return tiny_chat()


@pytest.fixture
def chain(chat: Any) -> Any:
    """An ELMDChain over :func:`chat` whose retriever always returns the same happy demonstration."""
    from chain_fakes import FixedRetriever

    from elmd_sdk.chains import ELMDChain

    return ELMDChain(chat_model=chat, retriever=FixedRetriever())
