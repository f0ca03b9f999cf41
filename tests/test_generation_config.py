"""One GenerationConfig: its defaults are the chat model's, its names the bundle's generation block's, the call
options' and the CLI options'; every entry point checks a value the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from elmd_sdk.cli.main import app
from elmd_sdk.errors import InputError
from elmd_sdk.models.generation import GENERATION_SETTINGS, GenerationConfig, check_generation, requested_length


def test_the_config_holds_every_setting_once_with_the_papers_sampling_defaults() -> None:
    config = GenerationConfig()
    assert tuple(config.model_dump()) == GENERATION_SETTINGS
    assert (config.do_sample, config.temperature, config.top_p, config.top_k) == (True, 0.95, 0.7, 0)  # paper 4.3
    assert (config.max_new_tokens, config.seed, config.copy_guard_ngram) == (256, None, 4)
    with pytest.raises(ValueError, match="frozen"):
        config.top_p = 0.5  # type: ignore[misc]


def test_updated_checks_overrides_keeps_unset_ones_and_reads_max_tokens_as_max_new_tokens() -> None:
    base = GenerationConfig(seed=7)
    assert base.updated({"max_tokens": 3, "top_p": None}) == GenerationConfig(seed=7, max_new_tokens=3)
    assert base.updated({"seed": None}).seed is None  # an explicit None samples without a seed
    with pytest.raises(InputError, match="pass only one of max_new_tokens / max_tokens"):
        base.updated({"max_tokens": 3, "max_new_tokens": 4})
    with pytest.raises(InputError, match="Input should be less than or equal to 1"):
        base.updated({"top_p": 1.5})
    with pytest.raises(InputError, match="unknown setting"):
        base.updated({"max_length": 3})
    assert requested_length({"max_tokens": 5}) == 5 and requested_length({"temperature": 0.1}) is None


def test_a_bundle_block_names_the_field_and_the_setting(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"generation.*temperature: Input should be a valid number") as error:
        check_generation({"temperature": "hot"}, file=tmp_path / "bundle.json", field="generation")
    assert error.value.field == "generation"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], {}),
        (["--max-new-tokens", "9", "--greedy"], {"max_new_tokens": 9, "do_sample": False}),
        (["--sample", "--temperature", "0.3", "--top-p", "0.5", "--seed", "2"],
         {"do_sample": True, "temperature": 0.3, "top_p": 0.5, "seed": 2}),
    ],
)  # fmt: skip
def test_serve_options_reach_the_chain_as_overrides(
    monkeypatch: pytest.MonkeyPatch, args: list[str], expected: dict[str, Any]
) -> None:
    import elmd_sdk.serve.server as server

    seen: list[Any] = []
    monkeypatch.setattr(server, "serve", lambda bundle, config, generation, **_: seen.append(generation))
    result = CliRunner().invoke(app, ["serve", *args])
    assert result.exit_code == 0, result.output
    assert seen == [expected]


def test_cli_options_are_checked_by_their_range() -> None:
    result = CliRunner().invoke(app, ["serve", "--top-p", "1.5"])
    assert result.exit_code == 2 and "--top-p" in result.output
    result = CliRunner().invoke(app, ["chat", "--max-new-tokens", "0"])
    assert result.exit_code == 2 and "--max-new-tokens" in result.output
