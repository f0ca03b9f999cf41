"""``elmd-sdk calibrate``: what a bundle's response emotion is calibrated and fused with, fitted on samples like the
ones to come (a validation set) and recorded in its ``bundle.json``, so that every chain loaded from it uses them:

* the emotion prior (batch calibration, Zhou et al., 2024): the log of each label's mean probability over the
  samples' prompts, which the closed-set choice divides by;
* the recalibration of the ERM's vote for the user's emotion (:mod:`~elmd_sdk.chains.vote_calibration`), fitted
  to the samples' gold utterance emotions (when the bundle retrieves);
* with ``fusion``, the weights of the fused emotion (:mod:`~elmd_sdk.chains.fusion`): the LLM's probabilities
  calibrated by that prior, the ERM's recalibrated vote for the user's emotion and the retrieved pairs' response
  emotions, fitted by maximum likelihood to the samples' gold response emotions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from elmd_sdk.bundle import MANIFEST_FILE, load_bundle, save_manifest
from elmd_sdk.chains.chain import ELMDChain
from elmd_sdk.chains.fusion import Decision, EmotionFusion, decision_for, fit_fusion, fused_probabilities
from elmd_sdk.chains.input import sample_input
from elmd_sdk.chains.reply import EmotionEvidence
from elmd_sdk.chains.vote_calibration import VoteCalibration, fit_vote_calibration
from elmd_sdk.data.jsonl import read_jsonl
from elmd_sdk.data.records import Sample
from elmd_sdk.errors import InputError
from elmd_sdk.io import check_writable
from elmd_sdk.progress import make_progress


def read_samples(data: str | Path, limit: int | None = None) -> list[Sample]:
    """The first ``limit`` (all: None) samples of the JSONL file ``data``; an error when there are none."""
    samples = read_jsonl(data)[:limit]
    if not samples:
        raise InputError("no samples to calibrate on", file=data)
    return samples


def fit_prior(chain: ELMDChain, data: str | Path, limit: int | None = None) -> tuple[float, ...]:
    """``chain.fit_emotion_prior`` on the first ``limit`` (all: None) samples of the JSONL file ``data``."""
    return chain.fit_emotion_prior(sample_input(sample) for sample in read_samples(data, limit))


def gather_evidence(chain: ELMDChain, samples: Sequence[Sample]) -> list[EmotionEvidence]:
    """Each sample's :meth:`ELMDChain.emotion_evidence`, with a progress bar."""
    evidence = []
    with make_progress() as progress:
        task = progress.add_task("scoring the labels", total=len(samples), info="")
        for sample in samples:
            evidence.append(chain.emotion_evidence(sample_input(sample)))
            progress.advance(task)
    return evidence


def fit_utterance_calibration(
    evidence: Sequence[EmotionEvidence], gold: Sequence[str], labels: Sequence[str]
) -> VoteCalibration | None:
    """The recalibration of the samples' raw votes for the user's emotion, fitted to their gold utterance emotions
    (``gold``); the samples without a vote or whose gold emotion is not a label are left out. None when none is
    left (the bundle does not retrieve, or the samples carry no utterance emotion)."""
    kept = [
        (item.utterance_vote, labels.index(label))
        for item, label in zip(evidence, gold, strict=True)
        if item.utterance_vote is not None and label in labels
    ]
    if not kept:
        return None
    return fit_vote_calibration([vote for vote, _ in kept], [index for _, index in kept], labels)


def recalibrated(
    evidence: Sequence[EmotionEvidence], calibration: VoteCalibration | None, labels: Sequence[str]
) -> list[EmotionEvidence]:
    """``evidence`` with each vote for the user's emotion recalibrated (as the chain reports it with
    ``calibration``)."""
    if calibration is None:
        return list(evidence)
    return [
        dataclasses.replace(item, utterance_vote=calibration.apply(item.utterance_vote, labels)) for item in evidence
    ]


def fit_emotion_fusion(
    evidence: Sequence[EmotionEvidence], prior: Sequence[float], gold: Sequence[str], labels: Sequence[str]
) -> tuple[EmotionFusion, Decision]:
    """The fusion weights for samples' ``evidence`` with the LLM's log-probabilities calibrated by ``prior``, with the
    decision rule picked on the same samples (also returned, with its exponent alpha); the samples whose gold response
    emotion is not a label are left out."""
    kept = [(item, labels.index(label)) for item, label in zip(evidence, gold, strict=True) if label in labels]
    if not kept:
        raise InputError("no sample has a gold response emotion among the bundle's labels", field="data")
    llm = torch.tensor([item.llm_log_probs for item, _ in kept]) - torch.tensor(list(prior))  # (n, L)
    votes = [item.utterance_vote for item, _ in kept], [item.response_vote for item, _ in kept]
    indices = [index for _, index in kept]
    fusion = fit_fusion(llm, *votes, indices, labels)
    decision = decision_for(fused_probabilities(fusion, llm, *votes, labels), indices, labels)
    return fusion.model_copy(
        update={"decision": decision.log_weights, "decision_min_ratio": decision.min_ratio}
    ), decision


@dataclasses.dataclass(frozen=True)
class Calibrated:
    """What ``elmd-sdk calibrate`` recorded in a bundle."""

    prior: dict[str, float]  # label -> log-prior
    utterance_calibration: VoteCalibration | None  # None: the bundle does not retrieve
    fusion: EmotionFusion | None  # None: not asked for


def calibrate_bundle(
    bundle_dir: str | Path, data: str | Path, limit: int | None = None, *, fusion: bool = False
) -> Calibrated:
    """Fit the bundle's trained chain's prior, the recalibration of its vote for the user's emotion (when it
    retrieves) and with ``fusion`` its fused emotion (made the emotion source) on samples of ``data``, and write them
    into its ``bundle.json`` (atomically): every chain loaded from the bundle then uses them. A fused emotion the
    bundle already records is refitted too, since it was fitted on the previous prior and votes. A ``bundle.json``
    that cannot be written (a read-only folder, the embedded default) stops it before any work."""
    manifest, _ = load_bundle(bundle_dir)
    check_writable(Path(bundle_dir) / MANIFEST_FILE)
    samples = read_samples(data, limit)
    chain = ELMDChain.from_bundle(bundle_dir, utterance_calibration=None)  # the raw votes are what is fitted
    evidence = gather_evidence(chain, samples)
    prior = chain.fit_prior_from(evidence)
    chain_block = dict(manifest.chain)
    calibration = fit_utterance_calibration(evidence, [s.utterance.emotion or "" for s in samples], manifest.labels)
    chain_block.pop("utterance_calibration", None)
    if calibration is not None:
        chain_block["utterance_calibration"] = calibration.model_dump()
    fitted = None
    if fusion or chain_block.get("emotion_fusion") is not None:  # a fusion fitted on the old prior and votes: refit
        gold = [sample.response.emotion or "" for sample in samples]
        fitted, _ = fit_emotion_fusion(
            recalibrated(evidence, calibration, manifest.labels), prior, gold, manifest.labels
        )
        chain_block["emotion_fusion"] = fitted.model_dump()
    if fusion:
        chain_block["emotion_source"] = "fused"
    recorded = dict(zip(manifest.labels, prior, strict=True))
    save_manifest(bundle_dir, dataclasses.replace(manifest, emotion_log_prior=recorded, chain=chain_block))
    return Calibrated(recorded, calibration, fitted)
