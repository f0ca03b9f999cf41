"""The paper's hyper-parameters (section 4.3) as defaults of the config dataclasses and of the command line.

A change to any of them must be deliberate: it fails here. The command-line defaults are read from the
dataclasses, so a second check makes sure no option restates a default of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import pytest
from typer.testing import CliRunner

from elmd_sdk.cli import train_eerg, train_erm, train_rep
from elmd_sdk.cli.main import app
from elmd_sdk.models.chat_model import ELMDChatModel
from elmd_sdk.models.prefix import DEFAULT_PRE_SEQ_LEN
from elmd_sdk.retrievers.encoder import ERMConfig
from elmd_sdk.trainers.eerg import EergConfig
from elmd_sdk.trainers.erm import ERMTrainConfig, erm_train_defaults
from elmd_sdk.trainers.examples import PromptConfig
from elmd_sdk.trainers.rep import RepConfig
from elmd_sdk.trainers.train_config import TrainConfig


def _cli_defaults(command: Callable[..., None]) -> dict[str, Any]:
    """The default of every option of a typer command function, by parameter name."""
    return {name: p.default for name, p in inspect.signature(command).parameters.items()}


def test_erm_s_4_tau_half_lr_5e_5_batch_32() -> None:
    config = ERMTrainConfig()
    assert (config.erm.s, config.erm.tau, config.lr, config.train.batch_size) == (4, 0.5, 5e-5, 32)
    cli = _cli_defaults(train_erm.command)
    assert (cli["s"], cli["tau"], cli["lr"], cli["batch_size"]) == (4, 0.5, 5e-5, 32)


def test_rep_lr_2e_5_batch_16() -> None:
    config = RepConfig()
    assert (config.lr, config.train.batch_size) == (2e-5, 16)
    cli = _cli_defaults(train_rep.command)
    assert (cli["lr"], cli["batch_size"]) == (2e-5, 16)


def test_eerg_lr_2e_2_batch_16_prefix_128() -> None:
    config = EergConfig()
    assert (config.lr, config.train.batch_size, DEFAULT_PRE_SEQ_LEN) == (2e-2, 16, 128)
    assert config.pre_seq_len is None  # None = DEFAULT_PRE_SEQ_LEN, or the length of --prefix-init
    cli = _cli_defaults(train_eerg.command)
    assert (cli["lr"], cli["batch_size"], cli["pre_seq_len"]) == (2e-2, 16, None)
    result = CliRunner().invoke(app, ["train", "eerg", "--help"], env={"COLUMNS": "200"})
    assert "Prefix length (default 128, or that of --prefix-init)" in result.output


def test_decoding_top_p_0_7_temperature_0_95() -> None:
    fields_ = ELMDChatModel.model_fields
    assert (fields_["top_p"].default, fields_["temperature"].default, fields_["do_sample"].default) == (0.7, 0.95, True)


def test_the_help_shows_the_paper_values() -> None:
    runner = CliRunner()
    erm = runner.invoke(app, ["train", "erm", "--help"], env={"COLUMNS": "200"}).output
    assert "[default: 5e-05]" in erm and "[default: 32]" in erm and "[default: 0.5]" in erm
    rep = runner.invoke(app, ["train", "rep", "--help"], env={"COLUMNS": "200"}).output
    assert "[default: 2e-05]" in rep and "[default: 16]" in rep


def _by_field(*configs: Any, but: tuple[str, ...] = ()) -> dict[str, Any]:
    """Field name -> the config dataclass (or default instance) holding it (a later config wins), leaving out the
    names in ``but``."""
    return {f.name: config for config in configs for f in fields(config) if f.name not in but}


# Options named after a config field, and the config whose default they must take.
_OPTIONS = [
    (train_erm.command, _by_field(erm_train_defaults(), ERMTrainConfig, ERMConfig)),
    (train_rep.command, _by_field(PromptConfig, TrainConfig, RepConfig, but=("labels",))),  # None: the seven
    (train_eerg.command, _by_field(TrainConfig, EergConfig)),
]


@pytest.mark.parametrize(("command", "configs"), _OPTIONS, ids=["erm", "rep", "eerg"])
def test_every_option_takes_its_config_default(command: Callable[..., None], configs: dict[str, Any]) -> None:
    checked = 0
    for name, default in _cli_defaults(command).items():
        config = configs.get(name)
        if config is None or not hasattr(config, name):  # no such field, or one with a default_factory
            continue
        expected = getattr(config, name)
        if name == "max_grad_norm":  # None (no clipping) is 0 on the command line
            expected = expected or 0.0
        assert default == expected, name
        checked += 1
    assert checked >= 8
