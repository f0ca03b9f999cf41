"""The user's emotion (``utterance_emotion``, the ERM's vote of the ``k`` nearest indexed utterances) against MELD's
gold utterance emotion (issue #21, point 4): accuracy, weighted F1 and the expected calibration error of the raw vote
and of the vote recalibrated as ``elmd-sdk calibrate`` does (``chains/vote_calibration.py``), for each index and each
``k``; no LLM is loaded.

MELD dev (read from ``--data-root``, never the test split) is split by dialogue 1:3 (seed 0), as
``benchmarks/emotion_fusion.py`` splits it: the calibration is fitted on the valid part, the rest is reported. Each
``--index`` is an index folder (e.g. MELD train indexed with a README-recipe ERM) or ``default``, the embedded
bundle's; ``--previous-weight`` also prints the vote mixed with the vote for the previous turn:

    .venv/bin/python benchmarks/utterance_emotion.py --index default --index erm1/index --k 10,30 --previous-weight 0.2
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from _common import meld_parser, read_meld


def parse_args() -> Any:
    p = meld_parser(__doc__)
    p.add_argument("--index", action="append", help="index folder, or 'default' for the embedded one (repeatable)")
    p.add_argument("--k", default="10", help="comma-separated numbers of voting neighbours")
    p.add_argument(
        "--previous-weight",
        type=float,
        default=None,
        help="also print the vote mixed with the vote for the previous turn at this weight",
    )
    return p.parse_args()


Vote = dict[str, float]


def mixed(own: list[Vote], previous: list[Vote | None], weight: float) -> list[Vote]:
    """Each vote mixed with its previous turn's vote (where there is one) at ``weight``."""
    return [
        vote if other is None else {e: (1 - weight) * vote[e] + weight * other[e] for e in vote}
        for vote, other in zip(own, previous, strict=True)
    ]


def main() -> None:
    args = parse_args()
    from elmd_sdk.chains.vote_calibration import fit_vote_calibration
    from elmd_sdk.data import EMOTIONS, split_samples
    from elmd_sdk.metrics.calibration import reliability
    from elmd_sdk.metrics.emotion import emotion_scores
    from elmd_sdk.paths import default_bundle_path
    from elmd_sdk.retrievers import EmotionalRetriever
    from elmd_sdk.retrievers.retriever import emotion_vote

    parts = split_samples(read_meld(args.data_root, "dev"), (0, 1, 3), seed=0)
    parts = {name: part for name, part in parts.items() if part}  # valid, test
    ks = [int(k) for k in args.k.split(",")]
    labels = list(EMOTIONS)
    uniform = dict.fromkeys(labels, 1.0 / len(labels))
    gold = {name: [sample.utterance.emotion or "" for sample in part] for name, part in parts.items()}
    print(f"MELD dev: {len(parts['valid'])} valid samples (calibration fitted), {len(parts['test'])} reported")
    print(f"{'index':<28} {'vote':<16} {'acc':>5} {'wF1':>5} {'ECE raw':>8} {'ECE calibrated':>15}  calibration")

    def report(index: str, name: str, votes: dict[str, list[Vote]]) -> None:
        calibration = fit_vote_calibration(votes["valid"], [labels.index(g) for g in gold["valid"]], labels)
        calibrated = [calibration.apply(vote, labels) or uniform for vote in votes["test"]]
        chosen = [max(vote, key=vote.__getitem__) for vote in votes["test"]]  # the calibrated vote's choice too
        s = emotion_scores(chosen, gold["test"], labels)
        raw_ece, ece = reliability(votes["test"], gold["test"])["ece"], reliability(calibrated, gold["test"])["ece"]
        print(
            f"{index[-28:]:<28} {name:<16} {s['emotion_accuracy']:5.1f} {s['emotion_weighted_f1']:5.1f} "
            f"{raw_ece:8.1f} {ece:15.1f}  floor {calibration.floor:g}, power {calibration.weight:.2f}"
        )

    for index in args.index or ["default"]:
        folder = default_bundle_path() / "index" if index == "default" else Path(index)
        retriever = EmotionalRetriever.load(folder, k=max(ks))
        start = time.perf_counter()
        found = {name: [retriever.invoke(s.utterance.text) for s in part] for name, part in parts.items()}
        before = {
            name: [retriever.invoke(s.history[-1].text) if s.history else None for s in part]
            for name, part in parts.items()
        }
        seconds = time.perf_counter() - start
        for k in ks:
            votes = {name: [emotion_vote(docs[:k], labels) or uniform for docs in part] for name, part in found.items()}
            report(index, f"k {k}", votes)
            if args.previous_weight is not None:
                previous = {
                    name: [None if docs is None else emotion_vote(docs[:k], labels) for docs in part]
                    for name, part in before.items()
                }
                votes = {name: mixed(votes[name], previous[name], args.previous_weight) for name in votes}
                report(index, f"k {k}, prev {args.previous_weight:g}", votes)
        print(f"  ({sum(len(part) for part in parts.values())} utterances and their previous turns in {seconds:.1f} s)")


if __name__ == "__main__":
    main()
