"""``elmd-sdk calibrate``: what a bundle's response emotion is calibrated and fused with, fitted on samples like the
ones to come (a validation set) and recorded in its ``bundle.json``, so that every chain loaded from it uses them:

* the emotion prior (batch calibration, Zhou et al., 2024): the log of each label's mean probability over the
  samples' prompts, which the closed-set choice divides by;
* with ``fusion``, the weights of the fused emotion (:mod:`~elmd_sdk.chains.fusion`): the LLM's probabilities
  calibrated by that prior, the ERM's vote for the user's emotion and the retrieved pairs' response emotions,
  fitted by maximum likelihood to the samples' gold response emotions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch

from elmd_sdk.bundle import MANIFEST_FILE, load_bundle, save_manifest
from elmd_sdk.chains.chain import ELMDChain
from elmd_sdk.chains.fusion import EmotionFusion, decision_for, fit_fusion, fused_probabilities
from elmd_sdk.chains.input import sample_input
from elmd_sdk.chains.reply import EmotionEvidence
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


def fit_emotion_fusion(
    evidence: Sequence[EmotionEvidence], prior: Sequence[float], gold: Sequence[str], labels: Sequence[str]
) -> tuple[EmotionFusion, float]:
    """The fusion weights for samples' ``evidence`` with the LLM's log-probabilities calibrated by ``prior``, and the
    decision rule picked on the same samples (with its exponent alpha); the samples whose gold response emotion is
    not a label are left out."""
    kept = [(item, labels.index(label)) for item, label in zip(evidence, gold, strict=True) if label in labels]
    if not kept:
        raise InputError("no sample has a gold response emotion among the bundle's labels", field="data")
    llm = torch.tensor([item.llm_log_probs for item, _ in kept]) - torch.tensor(list(prior))  # (n, L)
    votes = [item.utterance_vote for item, _ in kept], [item.response_vote for item, _ in kept]
    indices = [index for _, index in kept]
    fusion = fit_fusion(llm, *votes, indices, labels)
    decision, alpha = decision_for(fused_probabilities(fusion, llm, *votes, labels), indices, labels)
    return fusion.model_copy(update={"decision": decision}), alpha


def calibrate_bundle(
    bundle_dir: str | Path, data: str | Path, limit: int | None = None, *, fusion: bool = False
) -> tuple[dict[str, float], EmotionFusion | None]:
    """Fit the bundle's trained chain's prior (and with ``fusion`` its fused emotion) on samples of ``data`` and
    write them into its ``bundle.json`` (atomically): every chain loaded from the bundle then uses them. Returns
    both. A ``bundle.json`` that cannot be written (a read-only folder, the embedded default) stops it before any
    work."""
    manifest, _ = load_bundle(bundle_dir)
    check_writable(Path(bundle_dir) / MANIFEST_FILE)
    samples = read_samples(data, limit)
    chain = ELMDChain.from_bundle(bundle_dir)
    evidence = gather_evidence(chain, samples)
    prior = chain.fit_prior_from(evidence)
    fitted = None
    chain_block = dict(manifest.chain)
    if fusion:
        gold = [sample.response.emotion or "" for sample in samples]
        fitted, _ = fit_emotion_fusion(evidence, prior, gold, manifest.labels)
        chain_block.update(emotion_source="fused", emotion_fusion=fitted.model_dump())
    recorded = dict(zip(manifest.labels, prior, strict=True))
    save_manifest(bundle_dir, dataclasses.replace(manifest, emotion_log_prior=recorded, chain=chain_block))
    return recorded, fitted
