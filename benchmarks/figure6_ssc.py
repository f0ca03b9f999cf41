"""The paper's Figure 6: ERM quality against the self-separation coefficient s, on MELD, with the plain encoder as
the baseline of the same run.

For each s in ``--s`` the full ERM (ERT + SSC, Eq. 4) is trained on MELD train with the project's trainer, MELD
train is indexed with it and MELD dev utterances are the queries; a query hits when the top retrieved u' carries its
emotion (micro = share of queries, macro = mean per emotion), as in ``retrieval_quality.py``, whose training and
search this script shares. The paper plots its s = 1..8 on ChatGLM2's data; s = 4 is its choice (section 4.3).

    .venv/bin/python benchmarks/figure6_ssc.py --s 1,2,4,8 [--max-steps 120] [--threads 1] [--data-root ...]

Training options (``--max-steps``, ``--epochs``, ``--lr``, ...) are ``retrieval_quality.py``'s; MELD is read from
``--data-root`` (train and dev only, the test split is never read).
"""

from __future__ import annotations

import random
import tempfile
from pathlib import Path

from _common import read_meld
from retrieval_quality import measure
from retrieval_quality import parse_args as quality_args


def main() -> None:
    args = quality_args(__doc__, extra=lambda p: p.add_argument("--s", default="1,2,4,8", help="values of s"))
    import torch

    from elmd_sdk.retrievers.encoder import ERMConfig

    if args.threads:
        torch.set_num_threads(args.threads)
    values = [int(v) for v in args.s.split(",") if v.strip()]
    corpus = read_meld(args.data_root, "train")
    queries = [s for s in read_meld(args.data_root, "dev") if s.utterance.emotion]
    train = random.Random(args.seed).sample(corpus, args.train_limit) if 0 < args.train_limit < len(corpus) else corpus
    if 0 < args.query_limit < len(queries):
        queries = random.Random(args.seed + 1).sample(queries, args.query_limit)
    print(f"MELD from --data-root {args.data_root}: corpus {len(corpus)}, ERM trained on {len(train)}, "
          f"{len(queries)} dev queries; max_steps={args.max_steps or 'none'} epochs={args.epochs} lr={args.lr} "
          f"batch={args.batch_size} threads {torch.get_num_threads()}")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="elmd-figure6-") as tmp:
        work = args.work_dir or Path(tmp)
        rows = {"plain": measure(args, "plain", None, corpus, train, queries, work / "plain")}
        for s in values:
            erm = ERMConfig(base_model=args.base_model, s=s)
            rows[f"s={s}"] = measure(args, f"s={s}", erm, corpus, train, queries, work / f"s{s}")
    base_macro = rows["plain"][1]
    print(f"\n{'encoder':9s}  {'micro@1':>8s}  {'macro@1':>8s}  {'macro/plain':>11s}  {'time s':>7s}")
    for name, (micro, macro, seconds) in rows.items():
        print(f"{name:9s}  {micro:8.4f}  {macro:8.4f}  {macro / base_macro:11.3f}  {seconds:7.0f}")


if __name__ == "__main__":
    main()
