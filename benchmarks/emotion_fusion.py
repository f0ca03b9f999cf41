"""The reply emotion against the gold response emotion on MELD dev (issue #21, points 3 and 4): the LLM's calibrated
closed-set choice (the paper's), the fused emotion (``chains/fusion.py``: the LLM with the ERM's vote for the user's
emotion and the retrieved pairs' response emotions, chosen by its decision rule, and its most probable label), each
vote alone, the demonstration's e' and the majority class,
with paired bootstrap 95% intervals; the contradiction rate (a happy user answered with anger, disgust, sadness or
fear, a sad, fearful or angry user with happiness); the expected calibration error of the reply emotion's and the
utterance emotion's probabilities with a reliability diagram; the utterance emotion's weighted F1.

MELD dev (read from ``--data-root``, never the test split) is split by dialogue 1:3 (seed 0) into a valid part, on
which the prior (batch calibration) and the fusion weights are fitted, exactly as ``elmd-sdk calibrate --fusion``
fits them, and a test part that is reported. The chain is ``--bundle`` (default: the embedded one) with, given
``--index``, that index and its ERM as the retrieval (e.g. the README recipe's ERM and MELD train index):

    .venv/bin/python benchmarks/emotion_fusion.py --out fusion_default
    .venv/bin/python benchmarks/emotion_fusion.py --index meld/index --out fusion_meld

Each sample's evidence (one closed-set scoring pass) is cached in ``OUT/evidence.jsonl``; a re-run continues it.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from _common import meld_parser, read_meld

BOOTSTRAP = 1000


def parse_args() -> Any:
    p = meld_parser(__doc__)
    p.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the embedded one)")
    p.add_argument("--index", type=Path, default=None, help="index folder to retrieve from instead of the bundle's")
    p.add_argument("--out", type=Path, required=True, help="folder for evidence.jsonl, report.json, reliability.png")
    p.add_argument("--limit", type=int, default=None, help="score only the first N samples of each part")
    return p.parse_args()


def load_chain(bundle: Path | None, index: Path | None) -> Any:
    from elmd_sdk.chains.chain import ELMDChain
    from elmd_sdk.paths import default_bundle_path

    chain = ELMDChain.from_bundle(bundle or default_bundle_path())
    if index is not None:
        from elmd_sdk.retrievers import EmotionalRetriever

        chain = chain.model_copy(update={"retriever": EmotionalRetriever.load(index, k=1)})
    return chain.model_copy(update={"emotion_source": "llm", "emotion_fusion": None, "utterance_calibration": None})


def evidence_of(chain: Any, samples: list[Any], cache: Path) -> list[dict[str, Any]]:
    """Each sample's evidence and gold emotions, from ``cache`` where already scored."""
    from elmd_sdk.chains.input import sample_input

    done = [json.loads(line) for line in cache.read_text().splitlines()] if cache.exists() else []
    start = time.perf_counter()
    with cache.open("a", encoding="utf-8") as out:
        for i, sample in enumerate(samples[len(done) :], len(done)):
            item = chain.emotion_evidence(sample_input(sample))
            row = {
                "dialogue_id": sample.dialogue_id,
                "llm": item.llm_log_probs,
                "utterance_vote": item.utterance_vote,
                "response_vote": item.response_vote,
                "e_prime": item.demonstration_emotion,
                "gold": sample.response.emotion,
                "user_gold": sample.utterance.emotion,
            }
            out.write(json.dumps(row) + "\n")
            out.flush()
            done.append(row)
            if (i + 1) % 50 == 0:
                print(f"  {i + 1}/{len(samples)} scored ({time.perf_counter() - start:.0f} s this run)", flush=True)
    return done


def vote_table(vote: dict[str, float] | None, labels: list[str]) -> dict[str, float]:
    return dict(vote) if vote else dict.fromkeys(labels, 1.0 / len(labels))


def predictions(rows: list[dict[str, Any]], labels: list[str], prior: tuple[float, ...], fusion: Any) -> dict:
    """Each row's probability table and chosen label per system, chosen as the chat model chooses (greedy)."""
    import torch

    from elmd_sdk.models.closed_set import emotion_choice, emotion_probabilities, pick_emotion

    calibrated = replace(emotion_choice(labels), log_prior=prior)
    tables: dict[str, list[dict[str, float]]] = {"llm": [], "fused": [], "utterance vote": [], "response vote": []}
    chosen: dict[str, list[str]] = {"llm": [], "fused": [], "fused, most probable": []}
    for row in rows:
        scores = torch.tensor(row["llm"])
        llm = emotion_probabilities(calibrated, scores)
        decided = fusion.applied(calibrated, row["utterance_vote"], row["response_vote"])
        fused = emotion_probabilities(decided, scores)  # the decision rule changes the choice, not the probabilities
        tables["llm"].append(llm)
        tables["fused"].append(fused)
        tables["utterance vote"].append(vote_table(row["utterance_vote"], labels))
        tables["response vote"].append(vote_table(row["response_vote"], labels))
        chosen["llm"].append(pick_emotion(calibrated, llm, False, None))
        chosen["fused"].append(pick_emotion(decided, fused, False, None))
        chosen["fused, most probable"].append(max(fused, key=fused.__getitem__))
    for name in ("utterance vote", "response vote"):
        chosen[name] = [max(t, key=t.__getitem__) for t in tables[name]]
    chosen["e'"] = [row["e_prime"] or "neutral" for row in rows]
    return {"tables": tables, "chosen": chosen}


def scores(pred: list[str], gold: list[str], labels: list[str]) -> np.ndarray:
    """accuracy, macro-F1, weighted F1 (x100) of ``pred``."""
    from elmd_sdk.metrics.emotion import emotion_scores

    s = emotion_scores(pred, gold, labels)
    return np.array([s["emotion_accuracy"], s["emotion_macro_f1"], s["emotion_weighted_f1"]])


def main() -> None:
    args = parse_args()
    from elmd_sdk.chains.calibrate import fit_emotion_fusion, fit_utterance_calibration, recalibrated
    from elmd_sdk.chains.reply import EmotionEvidence
    from elmd_sdk.data import split_samples
    from elmd_sdk.evaluate.bootstrap import percentile_interval, resample_indices
    from elmd_sdk.metrics.calibration import reliability, write_reliability_png
    from elmd_sdk.metrics.conversation import contradicts
    from elmd_sdk.models.closed_set import batch_log_prior

    args.out.mkdir(parents=True, exist_ok=True)
    parts = split_samples(read_meld(args.data_root, "dev"), (0, 1, 3), seed=0)
    valid, test = parts["valid"][: args.limit], parts["test"][: args.limit]
    chain = load_chain(args.bundle, args.index)
    labels = list(chain.labels)
    print(f"MELD dev: {len(valid)} valid samples (fitting), {len(test)} test samples (reported)")
    valid_rows = evidence_of(chain, valid, args.out / "evidence_valid.jsonl")
    test_rows = evidence_of(chain, test, args.out / "evidence_test.jsonl")

    import torch

    prior = batch_log_prior(torch.tensor([row["llm"] for row in valid_rows]))
    evidence = [EmotionEvidence(r["llm"], r["utterance_vote"], r["response_vote"]) for r in valid_rows]
    calibration = fit_utterance_calibration(evidence, [r["user_gold"] for r in valid_rows], labels)
    fusion, decision = fit_emotion_fusion(
        recalibrated(evidence, calibration, labels), prior, [r["gold"] for r in valid_rows], labels
    )
    print(f"fitted on valid: prior {dict(zip(labels, np.round(np.exp(prior), 3), strict=True))}")
    print(f"user's emotion calibration: {calibration}")
    bias = {label: round(value, 2) for label, value in fusion.bias.items()}
    print(
        f"fusion weights: LLM {fusion.llm:.3f}, user's emotion {fusion.utterance:.3f}, "
        f"response emotions {fusion.response:.3f}; bias {bias}; decision exponent alpha {decision.alpha}, "
        f"least ratio to the top probability {fusion.decision_min_ratio}"
    )

    gold = [r["gold"] for r in test_rows]
    user_gold = [r["user_gold"] for r in test_rows]
    raw_votes = [vote_table(r["utterance_vote"], labels) for r in test_rows]
    if calibration is not None:  # the chain reports (and fuses) the recalibrated vote
        test_rows = [{**r, "utterance_vote": calibration.apply(r["utterance_vote"], labels)} for r in test_rows]
    made = predictions(test_rows, labels, prior, fusion)
    majority = max(labels, key=[r["gold"] for r in valid_rows].count)
    made["chosen"]["majority"] = [majority] * len(test_rows)
    indices = resample_indices(0, len(gold), BOOTSTRAP)
    report: dict[str, Any] = {"samples": len(gold), "fusion": fusion.model_dump(), "prior": list(prior), "rows": {}}
    report["utterance_calibration"] = None if calibration is None else calibration.model_dump()
    llm_draws = None
    header = f"{'row':<16} {'acc':>14} {'macro-F1':>16} {'weighted F1':>16} {'contradict':>10}"
    print(f"\n{len(gold)} MELD dev test samples, {BOOTSTRAP} paired bootstrap resamples (95% intervals)\n{header}")
    for name, pred in made["chosen"].items():
        value = scores(pred, gold, labels)
        draws = np.array([scores([pred[i] for i in row], [gold[i] for i in row], labels) for row in indices])
        if name == "llm":
            llm_draws = draws
        bounds = [percentile_interval(draws[:, k]) or [float("nan")] * 2 for k in range(3)]
        cells = [f"{v:5.1f} [{lo:4.1f},{hi:4.1f}]" for v, (lo, hi) in zip(value, bounds, strict=True)]
        contradiction = 100 * sum(contradicts(u, p) for u, p in zip(user_gold, pred, strict=True)) / len(pred)
        print(f"{name:<16} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} {contradiction:9.1f}%")
        row: dict[str, Any] = dict(zip(("accuracy", "macro_f1", "weighted_f1"), value.tolist(), strict=True))
        row["contradiction_rate"] = contradiction
        if llm_draws is not None and name != "llm":
            difference = draws[:, 1] - llm_draws[:, 1]
            gap = value[1] - scores(made["chosen"]["llm"], gold, labels)[1]
            row["macro_f1_minus_llm"] = {"value": gap, "interval": percentile_interval(difference)}
        report["rows"][name] = row
    fused_gap = report["rows"]["fused"]["macro_f1_minus_llm"]
    low, high = fused_gap["interval"]
    print(f"\nfused - llm macro-F1: {fused_gap['value']:+.1f}, 95% interval [{low:+.1f}, {high:+.1f}]")
    diagrams = {
        "reply emotion, llm": reliability(made["tables"]["llm"], gold),
        "reply emotion, fused": reliability(made["tables"]["fused"], gold),
        "utterance emotion, raw vote": reliability(raw_votes, user_gold),
        "utterance emotion, calibrated": reliability(made["tables"]["utterance vote"], user_gold),
    }
    for name, diagram in diagrams.items():
        print(f"ECE {name}: {diagram['ece']:.1f} (x100)")
    shown = [table[label] for table, label in zip(made["tables"]["fused"], made["chosen"]["fused"], strict=True)]
    low = 100 * float(np.mean(np.array(shown) < 0.15))
    print(f"fused: the chosen label's probability, median {np.median(shown):.2f}, below 0.15 in {low:.1f}% of samples")
    utterance = scores(made["chosen"]["utterance vote"], user_gold, labels)
    print(f"utterance emotion (ERM vote) vs the user's gold: acc {utterance[0]:.1f}, weighted F1 {utterance[2]:.1f}")
    report.update(
        ece={name: d["ece"] for name, d in diagrams.items()},
        fused_chosen_probability={"median": float(np.median(shown)), "percent_below_0.15": low},
        utterance_emotion={"accuracy": utterance[0], "weighted_f1": utterance[2]},
        majority_label=majority,
    )
    write_reliability_png(diagrams, args.out / "reliability.png")
    (args.out / "report.json").write_text(json.dumps(report, indent=1, default=float), encoding="utf-8")
    print(f"written: {args.out / 'report.json'}, {args.out / 'reliability.png'}")


if __name__ == "__main__":
    main()
