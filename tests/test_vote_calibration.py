"""The user's emotion as calibrated probabilities (issue #21, point 4): the retrieval vote's floor and temperature,
their maximum-likelihood fit, the chain that reports them, and ``elmd-sdk calibrate`` that fits and records them."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from langchain_core.documents import Document
from typer.testing import CliRunner

from elmd_sdk.chains.chain import ELMDChain
from elmd_sdk.chains.log_linear import fit_log_linear
from elmd_sdk.chains.reply import Retrieved
from elmd_sdk.chains.settings import check_chain_settings
from elmd_sdk.chains.vote_calibration import FLOORS, VoteCalibration, fit_vote_calibration
from elmd_sdk.cli.main import app
from elmd_sdk.data import EMOTIONS, write_jsonl
from elmd_sdk.data.records import Sample, Turn
from elmd_sdk.errors import InputError
from elmd_sdk.paths import default_bundle_path

LABELS = ("happy", "sad", "neutral")


def test_a_calibrated_vote_is_the_floored_vote_to_the_power_of_the_weight() -> None:
    calibration = VoteCalibration(weight=0.5, floor=0.01)
    got = calibration.apply({"happy": 0.81, "sad": 0.19, "neutral": 0.0}, LABELS)
    assert got is not None
    z = 0.9 + math.sqrt(0.19) + 0.1
    assert got == pytest.approx({"happy": 0.9 / z, "sad": math.sqrt(0.19) / z, "neutral": 0.1 / z})
    assert calibration.apply(None, LABELS) is None  # no neighbour voted: still no vote
    assert max(got, key=got.__getitem__) == "happy"  # a rescaling: the vote's choice stays
    with pytest.raises(ValueError):
        VoteCalibration(weight=0.0, floor=0.01)


def test_a_bundles_calibration_is_checked_naming_the_setting(tmp_path: Path) -> None:
    block = {"utterance_calibration": {"weight": 0.5, "floor": 0.1}}
    assert check_chain_settings(block) == block
    with pytest.raises(InputError) as error:
        check_chain_settings({"utterance_calibration": {"weight": 0.5, "floor": 1.5}}, file=tmp_path / "bundle.json")
    assert error.value.field == "chain.utterance_calibration.floor"


def test_fitting_finds_the_temperature_and_floor_that_made_the_labels() -> None:
    generator = torch.Generator().manual_seed(0)
    n = 4000
    # ten-neighbour votes: shares in tenths, often with labels no neighbour had
    counts = torch.multinomial(
        torch.softmax(torch.randn(n, 3, generator=generator) * 2, -1), 10, True, generator=generator
    )
    shares = torch.stack([(counts == i).sum(-1) for i in range(3)], dim=-1).double() / 10  # (n, 3)
    votes = [dict(zip(LABELS, row.tolist(), strict=True)) for row in shares]
    truth = VoteCalibration(weight=0.6, floor=FLOORS[3])
    probabilities = torch.tensor([list(truth.apply(vote, LABELS).values()) for vote in votes])  # type: ignore[union-attr]
    gold = torch.multinomial(probabilities, 1, generator=generator).squeeze(1).tolist()
    fitted = fit_vote_calibration(votes, gold, LABELS)
    assert fitted.floor == truth.floor and fitted.weight == pytest.approx(0.6, abs=0.08)


def test_the_log_linear_fit_without_a_bias_only_rescales() -> None:
    features = torch.tensor([[0.0, -1.0], [0.0, -1.0], [0.0, -1.0], [-1.0, 0.0]])
    fit = fit_log_linear([features], [0, 0, 1, 1], with_bias=False)
    assert fit.bias == (0.0, 0.0) and fit.others == ()
    # the likelihood 3/4 right at confidence sigmoid(w): maximal where sigmoid(w) = 3/4, w = log 3
    assert fit.first == pytest.approx(math.log(3), abs=1e-4)
    assert fit.loss == pytest.approx(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)), abs=1e-6)
    with pytest.raises(ValueError, match="one shape"):
        fit_log_linear([features, features[:2]], [0, 0, 1, 1])


def _document(score: float, emotion: str) -> Document:
    return Document(f"r' {score}", metadata={"score": score, "utterance_emotion": emotion, "response_emotion": emotion})


def test_retrieval_reports_the_calibrated_vote_and_its_choice() -> None:
    documents = [_document(0.6, "sad"), _document(0.4, "happy")]
    calibration = VoteCalibration(weight=2.0, floor=0.1)
    found = Retrieved.of(documents, LABELS, calibration=calibration)
    z = 0.36 + 0.16 + 0.01
    assert found.utterance_emotion_scores == pytest.approx({"happy": 0.16 / z, "sad": 0.36 / z, "neutral": 0.01 / z})
    assert found.utterance_emotion == "sad"
    assert found.response_emotion_scores == pytest.approx({"happy": 0.4, "sad": 0.6, "neutral": 0.0})  # raw


def test_a_chain_with_a_calibration_reports_it(chain: Any) -> None:
    calibrated = chain.model_copy(update={"utterance_calibration": VoteCalibration(weight=1.0, floor=0.05)})
    scores = calibrated.invoke({"utterance": "I got the job!"}).utterance_emotion_scores
    z = 1.0 + 0.05 * (len(EMOTIONS) - 1)  # FixedRetriever: one happy neighbour
    assert scores == pytest.approx({label: (1.0 if label == "happy" else 0.05) / z for label in EMOTIONS})


@pytest.mark.slow
def test_calibrate_fits_and_records_the_vote_calibration_and_refits_the_fusion(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    samples = [
        Sample("d1", Turn("A", "I won the lottery today!", "happy"), Turn("B", "That is amazing news!", "happy")),
        Sample("d2", Turn("A", "My cat ran away last night.", "sad"), Turn("B", "I'm so sorry.", "sad")),
        Sample("d3", Turn("A", "Where are the keys?", "neutral"), Turn("B", "On the table.", "neutral")),
        Sample("d4", Turn("A", "You broke my phone again!", "anger"), Turn("B", "I'm sorry, I'll fix it.", "sad")),
    ]
    valid = tmp_path / "valid.jsonl"
    write_jsonl(valid, samples)
    raw = ELMDChain.from_bundle(bundle, utterance_calibration=None)
    votes = [raw._retrieve(raw_input, {}).utterance_emotion_scores for raw_input in _parsed(raw, samples)]
    expected = fit_vote_calibration(votes, [raw.labels.index(s.utterance.emotion or "") for s in samples], raw.labels)  # type: ignore[arg-type]
    before = json.loads((bundle / "bundle.json").read_text())["chain"]
    result = CliRunner().invoke(app, ["calibrate", "--bundle", str(bundle), "--data", str(valid)])
    assert result.exit_code == 0, result.output
    assert "user's emotion calibration recorded" in result.output
    block = json.loads((bundle / "bundle.json").read_text())["chain"]
    recorded = block["utterance_calibration"]
    assert recorded == pytest.approx(expected.model_dump())
    # the default's fused emotion was fitted on other votes and another prior: refitted (on 4 samples, so it moves)
    assert block["emotion_source"] == "fused" and block["emotion_fusion"]["utterance"] != pytest.approx(
        before["emotion_fusion"]["utterance"], abs=1e-3
    )
    chain = ELMDChain.from_bundle(bundle)
    assert chain.utterance_calibration == VoteCalibration(**recorded)
    scores = chain.invoke({"utterance": samples[1].utterance.text}).utterance_emotion_scores
    assert scores == pytest.approx(expected.apply(votes[1], chain.labels))


def _parsed(chain: ELMDChain, samples: list[Sample]) -> list[Any]:
    from elmd_sdk.chains.input import parse_input, sample_input

    return [parse_input(sample_input(sample), chain.language, chain.labels) for sample in samples]
