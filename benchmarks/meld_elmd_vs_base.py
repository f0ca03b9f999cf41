"""Full ELMD against the untuned base model on MELD (paper 5.1 / Table 3 "w/o ERM"), with the default LLM, on CPU.

Both systems use the embedded SmolLM2-135M-Instruct, the same six-part prompt, the same decoding (the paper's
nucleus sampling, top-p 0.7, temperature 0.95, seeded per sample) and the same MELD dev samples:

- base: the untuned base model, prompt without a demonstration (no retrieval);
- full ELMD: the same model with the Emotional Retrieval Module: an ERM trained here on MELD train with the
  project's trainer (``train_erm``, paper settings s = 4, tau = 0.5, batch 32, lr 5e-5, AdamW) and a FAISS index
  of the MELD train (u', r') pairs built with it (``build_index``); the top demonstration r' goes into the prompt.

What this benchmark does NOT include, plainly: no video (MELD ships no clips here, so the video path E_v is absent
from both systems) and no REP/EERG training (a p-tuning prefix on SmolLM2 over MELD does not fit the CPU budget),
so "full ELMD" here is ERM retrieval + the prompt on the base LLM. Scores are x100, on the dev subset below.

MELD is read from ``--data-root`` (default ``../shared/data`` next to the repository: ``meld/train_sent_emo.csv``
and ``meld/dev_sent_emo.csv``; the test split is never read). Subset: ``--samples`` dev samples drawn with
``--seed`` (kept in file order), history capped to ``--max-history`` turns. Reproduce with::

    .venv/bin/python benchmarks/meld_elmd_vs_base.py --samples 50 --seed 0 --erm-max-steps 60 --threads 1
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from _common import dev_subset, meld_csv, meld_parser, read_meld

if TYPE_CHECKING:
    from elmd_sdk.data import Sample
    from elmd_sdk.evaluate import EvalResult

METRICS = (("BLEU-4", "bleu_4"), ("METEOR", "meteor"), ("ROUGE-L", "rouge_l"), ("emotion acc", "emotion_accuracy"))


def parse_args() -> argparse.Namespace:
    """Command-line options; the defaults fit in about 20 minutes of one busy CPU core."""
    p = meld_parser(__doc__)
    p.add_argument("--samples", type=int, default=50, help="MELD dev samples evaluated (drawn with --seed)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dev subset, the ERM training and decoding")
    p.add_argument("--max-history", type=int, default=4, help="history turns kept per sample (CPU prompt length)")
    p.add_argument("--max-new-tokens", type=int, default=40, help="reply length limit")
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of the paper's nucleus sampling")
    p.add_argument("--erm-max-steps", type=int, default=60, help="ERM optimizer steps (0 = one whole epoch)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared machine)")
    p.add_argument("--work-dir", type=Path, default=None, help="keep the ERM and index here (default: temp)")
    p.add_argument("--out", type=Path, default=None, help="folder for the two eval reports (JSON, all generations)")
    return p.parse_args()


def train_retriever(train: list[Sample], work: Path, args: argparse.Namespace) -> tuple[Any, float]:
    """Train the ERM on MELD train and index MELD train with it; returns the EmotionalRetriever and seconds taken."""
    from elmd_sdk.retrievers import EmotionalRetriever, EncoderSource, build_index
    from elmd_sdk.retrievers.encoder import ERMConfig
    from elmd_sdk.trainers.erm import ERMTrainConfig, erm_train_defaults, train_erm

    start = time.perf_counter()
    engine = replace(
        erm_train_defaults(),
        epochs=1,
        batch_size=32,
        seed=args.seed,
        max_steps=args.erm_max_steps or None,
        checkpoint_every=10_000,
        progress=True,
    )
    config = ERMTrainConfig(erm=ERMConfig(s=4, tau=0.5), lr=5e-5, train=engine)
    trained = train_erm(config, train, None, work / "erm")
    build_index(
        trained.encoder,
        train,
        work / "index",
        "flat",
        source=EncoderSource(kind="erm", path=str(work / "erm")),
        show_progress=True,
    )
    retriever = EmotionalRetriever.load(work / "index", k=1, encoder=trained.encoder)
    return retriever, time.perf_counter() - start


def print_table(base: EvalResult, full: EvalResult, n: int) -> None:
    """Scores of both systems and the ratio full / base."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"MELD dev subset ({n} samples): full ELMD vs base SmolLM2-135M-Instruct (x100)")
    for header in ("model", *(name for name, _ in METRICS), "emotion given %"):
        table.add_column(header, justify="left" if header == "model" else "right")

    def given(result: EvalResult) -> float:
        return 100.0 * sum(g.emotion is not None for g in result.generations) / len(result.generations)

    for name, result in (("base (no retrieval)", base), ("full ELMD (ERM + prompt)", full)):
        table.add_row(name, *(f"{result.metrics[key]:.3f}" for _, key in METRICS), f"{given(result):.1f}")
    ratios = []
    for _, key in METRICS:
        b, f = base.metrics[key], full.metrics[key]
        ratios.append(f"{f / b:.3f}" if b else "n/a (base 0)")
    table.add_row("ratio full / base", *ratios, f"{given(full) / given(base):.3f}" if given(base) else "n/a")
    Console().print(table)
    synonyms = "with WordNet synonyms" if full.metrics["meteor_synonyms"] else "without synonyms (no offline WordNet)"
    print(f"tokens: {full.metrics['tokenization']}; METEOR {synonyms}")


def main() -> None:
    """Prepare MELD, train and index the ERM, generate with both systems, score and print the comparison."""
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from elmd_sdk.chains.chain import ELMDChain
    from elmd_sdk.evaluate import eval_report, evaluate, write_report
    from elmd_sdk.models.chat_model import ELMDChatModel

    train = read_meld(args.data_root, "train", max_history=args.max_history)
    dev = read_meld(args.data_root, "dev", max_history=args.max_history)
    subset = dev_subset(dev, args.samples, args.seed)
    print(
        f"MELD train {len(train)} samples (ERM training + index), dev {len(dev)}; evaluating {len(subset)} dev samples"
    )

    with tempfile.TemporaryDirectory(prefix="elmd-meld-bench-") as temp:
        work = args.work_dir or Path(temp)
        retriever, retriever_s = train_retriever(train, work, args)
        print(f"ERM trained and MELD train indexed in {retriever_s:.0f} s")
        settings = {"max_new_tokens": args.max_new_tokens, "seed": args.seed, "do_sample": not args.greedy}
        chat = ELMDChatModel.load(None, **settings)
        full_chain = ELMDChain(chat_model=chat, retriever=retriever)
        base_chain = ELMDChain(chat_model=chat, use_retrieval=False)
        timings: dict[str, float] = {}
        results: dict[str, EvalResult] = {}
        for name, chain in (("base", base_chain), ("full", full_chain)):
            start = time.perf_counter()
            results[name] = evaluate(chain, subset, description=name, show_progress=True)
            timings[name] = time.perf_counter() - start
    for name, seconds in timings.items():
        print(f"{name}: {seconds:.0f} s for {len(subset)} samples ({seconds / len(subset):.1f} s/sample)")
    print_table(results["base"], results["full"], len(subset))
    if args.out is not None:
        from elmd_sdk.evaluate import EvalSettings

        eval_settings = EvalSettings(generation=settings)
        for name, result in results.items():
            report = eval_report(
                result,
                settings=eval_settings,
                data=meld_csv(args.data_root, "dev"),
                samples_total=len(dev),
                bundle=None,
            )
            report["benchmark"] = {"system": name, "subset_seed": args.seed, "max_history": args.max_history}
            write_report(args.out / f"meld_{name}.json", report)
        print(f"reports written to {args.out}")


if __name__ == "__main__":
    main()
