"""Emotion match@1 of the ERM retriever on MELD versus the plain encoder (paper Table 3 rows), in one run.

MELD train is both the ERM training data and the retrieval corpus; MELD dev utterances are the
queries. A query hits when the top retrieved u' carries the query's emotion; micro = share of all
queries, macro = mean of the per-emotion shares. Every variant is trained here with the project's
trainer and searched through ``EmotionalRetriever``; ratios are against the plain encoder of this run.

    .venv/bin/python benchmarks/retrieval_quality.py [--data-root ../shared/data] [--max-steps 120]

With ``--curve`` each trained variant also prints its dev macro@1 after every epoch (the trainer's own
validation: exact inner-product search over the training utterances, which are the table's corpus unless
``--train-limit`` is set), so one run shows how match@1 moves with training length; the table's figures are
always those of the last epoch, searched through the retriever.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from _common import meld_parser, read_meld

if TYPE_CHECKING:
    from elmd_sdk.data import Sample
    from elmd_sdk.retrievers.encoder import ERMConfig

VARIANTS = {
    # name: (use_ert, use_ssc); None = the plain sentence encoder, untrained
    "plain": None,
    "w/o ERT": (False, True),
    "w/o SSC": (True, False),
    "full ERM": (True, True),
}
TARGET_MACRO_RATIO = 1.3


def parse_args(
    description: str | None = __doc__, extra: Callable[[argparse.ArgumentParser], object] | None = None
) -> argparse.Namespace:
    """Command-line options (``extra`` adds a script's own); the defaults fit well under 30 minutes on 2 CPU cores."""
    p = meld_parser(description)
    p.add_argument("--max-steps", type=int, default=120, help="optimizer steps per trained variant (0 = no cap)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per variant (max-steps stops earlier)")
    p.add_argument("--train-limit", type=int, default=0, help="train the ERM on this many samples (0 = all)")
    p.add_argument("--query-limit", type=int, default=0, help="use this many dev queries (0 = all)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch (paper: 32)")
    p.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate (paper: 5e-5)")
    p.add_argument("--lr-schedule", choices=("linear", "constant"), default="linear", help="trainer default: linear")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = default; 1 helps on a busy CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--variants",
        default=",".join(name for name in VARIANTS if name != "plain"),
        help=f"comma-separated trained variants to compare with plain (of: {', '.join(list(VARIANTS)[1:])})",
    )
    p.add_argument("--index-type", choices=("flat", "hnsw", "ivf"), default="flat")
    p.add_argument("--base-model", default="default", help="sentence-transformers name or folder (default: MiniLM)")
    p.add_argument("--device", default=None, help="torch device for training and encoding (default: auto)")
    p.add_argument("--curve", action="store_true", help="print every trained variant's dev match@1 per epoch")
    p.add_argument("--work-dir", type=Path, default=None, help="keep ERM folders and indexes here (default: temp)")
    if extra is not None:
        extra(p)
    return p.parse_args()


def match_at_1(hits: list[tuple[str, bool]]) -> tuple[float, float]:
    """(micro, macro) share of hits from (query emotion, hit) pairs; macro averages over query emotions."""
    by_emotion: dict[str, list[bool]] = defaultdict(list)
    for emotion, hit in hits:
        by_emotion[emotion].append(hit)
    micro = sum(hit for _, hit in hits) / len(hits)
    macro = sum(sum(v) / len(v) for v in by_emotion.values()) / len(by_emotion)
    return micro, macro


def main() -> None:
    """Train the ablation variants, index MELD train with each, query with MELD dev, print the table."""
    args = parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"data: MELD read from --data-root {args.data_root} (train_sent_emo.csv = corpus + ERM training data, ")
    print("      dev_sent_emo.csv = queries; the test split is never read)")
    corpus = read_meld(args.data_root, "train")
    queries = [s for s in read_meld(args.data_root, "dev") if s.utterance.emotion]
    rng = random.Random(args.seed)
    train = rng.sample(corpus, args.train_limit) if 0 < args.train_limit < len(corpus) else corpus
    if 0 < args.query_limit < len(queries):
        queries = random.Random(args.seed + 1).sample(queries, args.query_limit)
    print(
        f"corpus {len(corpus)} (u', r') pairs; ERM trained on {len(train)} samples; {len(queries)} dev queries; "
        f"torch threads {torch.get_num_threads()}"
    )
    print(
        f"settings: max_steps={args.max_steps or 'none'} epochs={args.epochs} batch={args.batch_size} lr={args.lr} "
        f"({args.lr_schedule}) "
        f"seed={args.seed} index={args.index_type} base_model={args.base_model} device={args.device or 'auto'}"
    )

    with tempfile.TemporaryDirectory(prefix="elmd-retrieval-quality-") as tmp:
        results = run_variants(args, corpus, train, queries, args.work_dir or Path(tmp))
    report(results)


def run_variants(
    args: argparse.Namespace, corpus: list[Sample], train: list[Sample], queries: list[Sample], work: Path
) -> dict[str, tuple[float, float, float]]:
    """Train (or load) each variant, index the corpus with it, and measure (micro, macro, seconds)."""
    from elmd_sdk.retrievers.encoder import ERMConfig

    chosen = ["plain", *(v.strip() for v in args.variants.split(",") if v.strip())]
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
    results: dict[str, tuple[float, float, float]] = {}
    for name in chosen:
        switches = VARIANTS[name]
        erm = (
            None
            if switches is None
            else ERMConfig(base_model=args.base_model, use_ert=switches[0], use_ssc=switches[1])
        )
        results[name] = measure(args, name, erm, corpus, train, queries, work / name.replace(" ", "_").replace("/", ""))
    return results


def measure(
    args: argparse.Namespace,
    name: str,
    erm: ERMConfig | None,
    corpus: list[Sample],
    train: list[Sample],
    queries: list[Sample],
    folder: Path,
) -> tuple[float, float, float]:
    """Train an ERM with ``erm`` (None: the plain encoder, untrained), index the corpus with it and search with the
    queries: (micro@1, macro@1, seconds)."""
    from elmd_sdk.retrievers import EmotionalRetriever, EncoderSource, ERMEncoder, build_index
    from elmd_sdk.trainers.erm import ERMTrainConfig, erm_train_defaults, train_erm

    started = time.perf_counter()
    if erm is None:
        encoder = ERMEncoder.plain(args.base_model, device=args.device)
        source = EncoderSource("plain", None)
    else:
        engine = replace(
            erm_train_defaults(),
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr_schedule=args.lr_schedule,
            seed=args.seed,
            max_steps=args.max_steps or None,
            checkpoint_every=10**9,
            progress=None,
        )
        config = ERMTrainConfig(erm=erm, lr=args.lr, device=args.device, train=engine)
        trained = train_erm(config, train, queries if args.curve else None, folder / "erm")
        for stats in trained.history if args.curve else ():
            print(
                f"  {name} epoch {stats.epoch} (step {stats.global_step}): loss {stats.train_loss:.4f} "
                f"dev micro {stats.valid_match_micro:.4f} macro {stats.valid_match_macro:.4f}",
                flush=True,
            )
        encoder = trained.encoder
        source = EncoderSource("erm", str(folder / "erm"))
    build_index(encoder, corpus, folder / "index", args.index_type, source=source, show_progress=True)
    retriever = EmotionalRetriever.load(folder / "index", k=1, encoder=encoder)
    vectors = encoder.encode([q.utterance.text for q in queries])  # (q, dim)
    hits = []
    for query, vector in zip(queries, vectors, strict=True):
        [top] = retriever.search_by_vector(vector)
        hits.append((str(query.utterance.emotion), top.metadata["utterance_emotion"] == query.utterance.emotion))
    micro, macro = match_at_1(hits)
    seconds = time.perf_counter() - started
    print(f"{name:9s} micro {micro:.4f} macro {macro:.4f} ({seconds:.0f} s)", flush=True)
    return micro, macro, seconds


def report(results: dict[str, tuple[float, float, float]]) -> None:
    """Print the table of match@1 and ratios to the plain encoder, and whether the target is met."""
    base_micro, base_macro, _ = results["plain"]
    print()
    header = ("variant", "micro@1", "macro@1", "micro/plain", "macro/plain", "time s")
    print(f"{header[0]:9s}  {header[1]:>8s}  {header[2]:>8s}  {header[3]:>11s}  {header[4]:>11s}  {header[5]:>7s}")
    for name, (micro, macro, seconds) in results.items():
        print(
            f"{name:9s}  {micro:8.4f}  {macro:8.4f}  {micro / base_micro:11.3f}  {macro / base_macro:11.3f}  "
            f"{seconds:7.0f}"
        )
    if "full ERM" in results:
        ratio = results["full ERM"][1] / base_macro
        verdict = "met" if ratio >= TARGET_MACRO_RATIO else "NOT met"
        print(f"target: full ERM macro match@1 >= {TARGET_MACRO_RATIO}x plain -> {ratio:.3f}x, {verdict}")


if __name__ == "__main__":
    main()
