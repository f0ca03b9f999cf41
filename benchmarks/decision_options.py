"""How a decision compares options of different token lengths, and what calibration does: measured on MELD dev.

Each sampled MELD dev utterance, with up to ``--history`` turns before it, is a text input (one ``Speaker: text`` line
per turn) asked one choice question: which emotion the last speaker expresses, with paraphrased options of 2 to 5
tokens (``OPTIONS``: the gold label's paraphrase is the right answer). The prompts are those of ``ELMDDecisions``
(:mod:`~elmd_sdk.chains.decision_prompt`), scored once by the bundle's chat model; the four ways of reading the scores
are then compared: length normalisation ``sum`` (total log-likelihood) or ``mean`` (per token), each without and with
contextual calibration (the content-free inputs "N/A" and "[MASK]", :func:`~elmd_sdk.chains.decisions.
content_free_prior`). Figures: accuracy and macro-F1 (x100), mean negative log-likelihood of the gold option, ECE of
the top option (x100, 10 bins), and how often each option is chosen (a reading that favours short or long options
shows it here). The test split is never read.

    .venv/bin/python benchmarks/decision_options.py [--bundle DIR] [--n 300] [--history 3] [--seed 0] [--json OUT]
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from _common import dev_subset, meld_parser, read_meld  # also sets HF_HUB_OFFLINE and TOKENIZERS_PARALLELISM

OPTIONS = {
    "happy": "joy or happiness",
    "surprise": "surprise or amazement",
    "sad": "sadness",
    "disgust": "disgust or revulsion",
    "anger": "anger or irritation",
    "fear": "fear or worry",
    "neutral": "no particular emotion",
}
"""Each label's option as the question offers it: several tokens each, of different lengths."""
READINGS = (("sum", False), ("sum", True), ("mean", False), ("mean", True))


def parse_args() -> Any:
    p = meld_parser(__doc__)
    p.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the embedded default bundle)")
    p.add_argument("--n", type=int, default=300, help="MELD dev utterances, drawn with --seed")
    p.add_argument("--history", type=int, default=3, help="turns before the utterance in the input")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=8, help="prompts scored together")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    from elmd_sdk.chains import ELMDChain
    from elmd_sdk.chains.calibration import CONTENT_FREE
    from elmd_sdk.chains.decision_prompt import question_prompt, render_input
    from elmd_sdk.chains.decision_types import ChoiceQuestion
    from elmd_sdk.chains.decisions import content_free_prior, option_probabilities
    from elmd_sdk.metrics.calibration import reliability
    from elmd_sdk.metrics.emotion import emotion_scores

    command = shlex.join([sys.executable, *sys.argv])
    print(f"command: {command}", flush=True)
    chain = ELMDChain.from_bundle(args.bundle) if args.bundle else ELMDChain.default()
    chat = chain.chat_model
    samples = dev_subset(read_meld(args.data_root, "dev", max_history=args.history), args.n, args.seed)
    labels = list(OPTIONS)
    lengths = {label: len(chat.get_token_ids(f"Answer: {text}")) - 2 for label, text in OPTIONS.items()}
    print(f"{len(samples)} MELD dev utterances; option tokens after 'Answer:': {lengths}", flush=True)

    def question(speaker: str) -> ChoiceQuestion:
        return ChoiceQuestion(instructions=f"Which emotion does {speaker} express in the last line?",
                              choices=tuple({"value": OPTIONS[label]} for label in labels))  # fmt: skip

    started = time.perf_counter()
    rows = []
    for start in range(0, len(samples), args.batch):
        batch = samples[start : start + args.batch]
        prompts = []
        for sample in batch:
            lines = [f"{turn.speaker}: {turn.text}" for turn in [*sample.history, sample.utterance]]
            prompts.append(
                question_prompt(render_input("\n".join(lines), "en"), question(sample.utterance.speaker), "en")
            )
        rows += chat.score_answers(prompts)
        print(f"  {len(rows)}/{len(samples)} scored, {time.perf_counter() - started:.0f} s", flush=True)
    priors: dict[tuple[str, str], Any] = {}  # the question names the speaker: one prior per speaker and reading
    gold = [sample.utterance.emotion for sample in samples]
    results: dict[str, Any] = {}
    for how, calibrated in READINGS:
        tables = []
        for sample, scored in zip(samples, rows, strict=True):
            prior = None
            if calibrated:
                speaker = sample.utterance.speaker
                if (how, speaker) not in priors:
                    free = [question_prompt(render_input(text, "en"), question(speaker), "en") for text in CONTENT_FREE]
                    priors[(how, speaker)] = content_free_prior(chat.score_answers(free), how)
                prior = priors[(how, speaker)]
            tables.append(dict(zip(labels, option_probabilities(scored, how, prior), strict=True)))
        predicted = [max(table, key=table.__getitem__) for table in tables]
        scores = emotion_scores(predicted, gold, labels)  # type: ignore[arg-type]
        nll = sum(-math.log(max(table[g], 1e-12)) for table, g in zip(tables, gold, strict=True)) / len(gold)
        name = f"{how}{' + calibration' if calibrated else ''}"
        results[name] = {
            "accuracy": scores["emotion_accuracy"],
            "macro_f1": scores["emotion_macro_f1"],
            "nll": nll,
            "ece": reliability(tables, gold)["ece"],  # type: ignore[arg-type]
            "chosen": dict(Counter(predicted)),
        }
    print(
        f"\n{len(samples)} MELD dev utterances (seed {args.seed}, history {args.history}), gold: {dict(Counter(gold))}"
    )
    print(f"{'reading':22s} {'accuracy':>9s} {'macro-F1':>9s} {'NLL':>7s} {'ECE':>6s}  chosen")
    for name, r in results.items():
        chosen = ", ".join(f"{label} {r['chosen'].get(label, 0)}" for label in labels)
        print(f"{name:22s} {r['accuracy']:9.1f} {r['macro_f1']:9.1f} {r['nll']:7.3f} {r['ece']:6.1f}  {chosen}")
    print(f"seconds: {time.perf_counter() - started:.0f}")
    if args.json:
        from elmd_sdk.io import atomic_write_bytes

        data = {"command": command, "n": len(samples), "option_tokens": lengths, "results": results}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.json, json.dumps(data, indent=2).encode())
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
