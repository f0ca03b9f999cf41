"""Replies a chatbot can ship, measured on MELD dev: closed-set emotion vs free generation vs no retrieval.

One run prints, on the same MELD dev samples (each with at least one history turn):

- for four systems over one SmolLM2-135M-Instruct chat model (the embedded default LLM, untuned, greedy, the
  default bundle's no-repeat-3 rule): "closed" (closed-set emotion decoding with the ERM's demonstration as an
  example exchange u', e', r', the SDK's default), "free" (the model writes the emotion line itself, as in the
  paper), "no retrieval" (closed set, no demonstration) and "paper R" (closed set, the demonstration in the
  paper's form: r' with its special instruction only): emotion accuracy and macro-F1, how many replies name a
  label, template-leak rate, copy rate, distinct-2, seconds per reply;
- two emotion baselines on the same samples: the majority class and the response emotion e' of the top retrieved
  demonstration;
- the utterance emotion (the similarity-weighted vote of the ``--vote-k`` nearest MELD train utterances) as weighted
  F1, with the ERM against the plain encoder (all-MiniLM-L6-v2) and the majority class;
- the cost of closed-set scoring: the time of a closed reply against the time of a free reply of the same length
  in tokens (the same prompt decoded in free mode with exactly as many new tokens), per sample, median ratio.

The retrieval corpus is MELD train (``../shared/data/meld/train_sent_emo.csv`` under ``--data-root``; the test
split is never read), indexed with the ERM the README trains on it (``--erm``: ``elmd-sdk data prepare --format
meld .../train_sent_emo.csv --out meld.jsonl`` then ``elmd-sdk train erm --data meld.jsonl --out erm``) and with
the plain encoder. Reproduce with::

    .venv/bin/python benchmarks/reply_quality.py --erm erm --samples 200 --threads 2 --out reply_quality
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import dev_subset, meld_csv, meld_parser, read_meld

if TYPE_CHECKING:
    from elmd_sdk.data import Sample
    from elmd_sdk.evaluate import EvalResult


SYSTEMS = ("closed", "free", "no retrieval", "paper R")


def parse_args() -> argparse.Namespace:
    p = meld_parser(__doc__)
    p.add_argument("--erm", type=Path, required=True, help="ERM folder trained on MELD train (elmd-sdk train erm)")
    p.add_argument("--samples", type=int, default=200, help="MELD dev samples with history (drawn with --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dev subset")
    p.add_argument("--max-history", type=int, default=4, help="history turns kept per sample")
    p.add_argument("--max-new-tokens", type=int, default=40, help="reply length limit")
    p.add_argument("--vote-k", type=int, default=10, help="neighbours voting for the utterance emotion")
    p.add_argument("--timing-samples", type=int, default=30, help="samples of the closed vs free time comparison")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--work-dir", type=Path, default=None, help="keep the two indexes here (default: temporary)")
    p.add_argument("--out", type=Path, default=None, help="folder for the eval reports and confusion pictures")
    p.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help=f"comma-separated systems to run (of: {', '.join(SYSTEMS)}; 'closed' is always run)",
    )
    return p.parse_args()


def build_retrievers(train: list[Sample], erm_dir: Path, work: Path, k: int) -> tuple[Any, Any]:
    """EmotionalRetrievers over MELD train with the ERM and with the plain encoder (indexes built here)."""
    from elmd_sdk.retrievers import EmotionalRetriever, EncoderSource, ERMEncoder, build_index

    retrievers = []
    for name, encoder, source in (
        ("erm", ERMEncoder.load(erm_dir), EncoderSource(kind="erm", path=str(erm_dir.resolve()))),
        ("plain", ERMEncoder.plain(), EncoderSource(kind="plain", path=None)),
    ):
        start = time.perf_counter()
        build_index(encoder, train, work / name, "flat", source=source, show_progress=True)
        print(f"indexed MELD train with the {name} encoder in {time.perf_counter() - start:.0f} s")
        retrievers.append(EmotionalRetriever.load(work / name, k=k, encoder=encoder))
    return retrievers[0], retrievers[1]


def utterance_emotion_f1(subset: list[Sample], retriever: Any, labels: tuple[str, ...], k: int) -> float:
    """Weighted F1 (x100) of the k-neighbour vote of ``retriever`` against the utterances' gold emotions."""
    from elmd_sdk.metrics.emotion import emotion_scores
    from elmd_sdk.retrievers.retriever import emotion_vote

    predicted = []
    for sample in subset:
        votes = emotion_vote(retriever.invoke(sample.utterance.text, k=k), labels)
        predicted.append(None if votes is None else max(votes, key=votes.__getitem__))
    gold = [str(sample.utterance.emotion) for sample in subset]
    return float(emotion_scores(predicted, gold, labels)["emotion_weighted_f1"])


def closed_vs_free_seconds(chain: Any, subset: list[Sample], n: int) -> list[float]:
    """Per sample: time of a closed reply / time of a free reply with exactly as many new tokens (header + response)."""
    from elmd_sdk.evaluate import sample_input

    chat = chain.chat_model
    ratios = []
    for sample in subset[:n]:
        messages, options = chain.prepare(sample_input(sample))
        start = time.perf_counter()
        closed = chat.invoke(messages, **options)
        closed_s = time.perf_counter() - start
        choice = options.pop("emotion_choice")
        line = choice.lines[choice.labels.index(closed.response_metadata["emotion"])]
        length = len(chat.get_token_ids(line + choice.response_key)) + closed.usage_metadata["output_tokens"]
        start = time.perf_counter()
        chat.invoke(messages, **options, max_new_tokens=length, min_new_tokens=length)
        ratios.append(closed_s / (time.perf_counter() - start))
    return ratios


def row(name: str, result: EvalResult, seconds: float) -> list[str]:
    metrics = result.metrics
    named = 100.0 * sum(g.emotion is not None for g in result.generations) / len(result.generations)
    copy = "-" if metrics["copy_rate"] is None else f"{metrics['copy_rate']:.1f}"
    return [
        name,
        f"{metrics['emotion_accuracy']:.1f}",
        f"{metrics['emotion_macro_f1']:.1f}",
        f"{named:.0f}",
        f"{metrics['template_leak_rate']:.1f}",
        copy,
        f"{metrics['distinct_2']:.1f}",
        f"{seconds / len(result.generations):.2f}",
    ]


def main() -> None:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    from elmd_sdk.chains.chain import ELMDChain
    from elmd_sdk.evaluate import EvalSettings, eval_report, evaluate, write_report
    from elmd_sdk.metrics.emotion import emotion_scores
    from elmd_sdk.models.chat_model import ELMDChatModel

    train = read_meld(args.data_root, "train", max_history=args.max_history)
    dev = read_meld(args.data_root, "dev", max_history=args.max_history)
    subset = dev_subset([s for s in dev if s.history], args.samples, args.seed)
    print(f"MELD train {len(train)} samples (retrieval corpus); dev {len(dev)}, evaluating {len(subset)} with history")

    with tempfile.TemporaryDirectory(prefix="elmd-reply-bench-") as temp:
        work = args.work_dir or Path(temp)
        erm_retriever, plain_retriever = build_retrievers(train, args.erm, work, args.vote_k)
        chat = ELMDChatModel.load(None, do_sample=False, max_new_tokens=args.max_new_tokens, no_repeat_ngram_size=3)
        systems = {
            "closed": ELMDChain(chat_model=chat, retriever=erm_retriever, emotion_vote_k=args.vote_k),
            "free": ELMDChain(chat_model=chat, retriever=erm_retriever, emotion_mode="free"),
            "no retrieval": ELMDChain(chat_model=chat, retriever=erm_retriever, use_retrieval=False),
            "paper R": ELMDChain(
                chat_model=chat, retriever=erm_retriever, emotion_vote_k=args.vote_k, demonstration_form="paper"
            ),
        }
        chosen = {"closed", *(name.strip() for name in args.systems.split(",") if name.strip())}
        if unknown := sorted(chosen - set(systems)):
            raise SystemExit(f"unknown system(s) {unknown}; known: {', '.join(systems)}")
        systems = {name: chain for name, chain in systems.items() if name in chosen}
        labels = systems["closed"].labels
        results: dict[str, EvalResult] = {}
        seconds: dict[str, float] = {}
        for name, chain in systems.items():
            start = time.perf_counter()
            results[name] = evaluate(chain, subset, description=name, show_progress=True)
            seconds[name] = time.perf_counter() - start
        ratios = closed_vs_free_seconds(systems["closed"], subset, args.timing_samples)
        plain_f1 = utterance_emotion_f1(subset, plain_retriever, labels, args.vote_k)

    table = Table(title=f"MELD dev, {len(subset)} samples with history, SmolLM2-135M-Instruct untuned, greedy (x100)")
    for header in ("system", "emo acc", "emo macro-F1", "% named", "leak %", "copy %", "distinct-2", "s/reply"):
        table.add_column(header, justify="left" if header == "system" else "right")
    for name, result in results.items():
        table.add_row(*row(name, result, seconds[name]))
    console = Console(width=130)
    console.print(table)
    baselines = results["closed"].metrics["emotion_baselines"]
    majority, demo = baselines["majority"], baselines["demonstration"]
    print(
        f"response-emotion baselines on the same samples: majority ({majority['label']}) acc "
        f"{majority['emotion_accuracy']:.1f} macro-F1 {majority['emotion_macro_f1']:.1f}; demonstration e' acc "
        f"{demo['emotion_accuracy']:.1f} macro-F1 {demo['emotion_macro_f1']:.1f}"
    )
    gold_utterance = [str(s.utterance.emotion) for s in subset]
    common = max(labels, key=gold_utterance.count)
    majority_f1 = emotion_scores([common] * len(subset), gold_utterance, labels)["emotion_weighted_f1"]
    utterance = results["closed"].metrics["utterance_emotion"]
    print(
        f"utterance emotion, weighted F1 ({args.vote_k}-neighbour vote): ERM {utterance['emotion_weighted_f1']:.1f}, "
        f"plain encoder {plain_f1:.1f}, majority ({common}) {majority_f1:.1f}"
    )
    print(
        f"closed-set reply time / free reply of the same length: median {statistics.median(ratios):.2f}, "
        f"mean {statistics.fmean(ratios):.2f} over {len(ratios)} samples (target <= 1.2)"
    )
    print(f"threads {args.threads}; tokens: {results['closed'].metrics['tokenization']}")
    if args.out is not None:
        for name, result in results.items():
            settings = EvalSettings(
                generation={"max_new_tokens": args.max_new_tokens, "do_sample": False},
                emotion_mode="free" if name == "free" else "closed",
                demonstration_form="paper" if name == "paper R" else "exchange",
            )
            report = eval_report(
                result, settings=settings, data=meld_csv(args.data_root, "dev"), samples_total=len(dev), bundle=None
            )
            report["benchmark"] = {"system": name, "subset_seed": args.seed, "max_history": args.max_history}
            write_report(args.out / f"{name.replace(' ', '_')}.json", report)
        print(f"reports written to {args.out}")


if __name__ == "__main__":
    main()
