"""Speed of the retrieval module: index build throughput and query latency of ``EmotionalRetriever.invoke``.

1. Build throughput: ``build_index`` (plain MiniLM encoder, flat index, written to disk) over real MELD
   train utterances, as a ratio of raw ``SentenceTransformer.encode`` throughput on the same texts in the
   same run (target >= 0.9). Measurements alternate and the best of ``--repeats`` is kept for each side.
2. Query latency: p50/p99 of ``retriever.invoke`` on an index of ``--entries`` (default 100,000) entries
   whose vectors are SYNTHETIC (random unit vectors; metadata is placeholder text), queried with real MELD
   dev utterances; the FAISS search alone and the query encoding alone are reported separately
   (targets: invoke p50 < 20 ms, FAISS p50 < 2 ms on a 2-core CPU).

    .venv/bin/python benchmarks/retrieval_speed.py [--data-root ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from _common import meld_parser, read_meld

if TYPE_CHECKING:
    from elmd_sdk.data import Sample


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = meld_parser(__doc__)
    p.add_argument("--texts", type=int, default=3000, help="MELD train texts for throughput (0 = skip)")
    p.add_argument("--repeats", type=int, default=2, help="alternating throughput measurements per side")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--entries", type=int, default=100_000, help="entries of the latency index (0 = skip that part)")
    p.add_argument("--queries", type=int, default=300, help="timed queries per index type")
    p.add_argument(
        "--index-types", default="hnsw,flat", help="comma-separated index types for the latency part (flat is exact)"
    )
    p.add_argument("--ssc", type=int, default=0, help="query with an (untrained) ERM of s=N (0 = plain encoder)")
    p.add_argument("--threads", type=int, default=0, help="torch and FAISS threads (0 = library default)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args()


def percentiles_ms(samples: list[float]) -> str:
    """'p50 X ms, p99 Y ms' of durations in seconds."""
    p50, p99 = np.percentile(np.asarray(samples) * 1e3, [50, 99])
    return f"p50 {p50:7.3f} ms  p99 {p99:7.3f} ms"


def timed(fn: Callable[[], object]) -> float:
    """Seconds one call of ``fn`` takes."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def throughput(args: argparse.Namespace, texts: list[str], samples: list[Sample], work: Path) -> None:
    """Print build_index and raw sentence-transformers throughput on the same texts, and their ratio."""
    from sentence_transformers import SentenceTransformer

    from elmd_sdk.paths import default_encoder_path
    from elmd_sdk.retrievers import EncoderSource, ERMEncoder, build_index

    raw_model = SentenceTransformer(str(default_encoder_path()), device="cpu")
    encoder = ERMEncoder.plain()
    bs = args.batch_size
    raw_model.encode(texts[:128], batch_size=bs)  # warm-up
    encoder.encode(texts[:128], batch_size=bs)
    source = EncoderSource("plain", None)
    raw_times, build_times = [], []
    for i in range(args.repeats):
        raw_times.append(timed(lambda: raw_model.encode(texts, batch_size=bs, show_progress_bar=False)))
        out = work / f"build{i}"
        build_times.append(timed(lambda out=out: build_index(encoder, samples, out, source=source, batch_size=bs)))
    raw_rate, build_rate = len(texts) / min(raw_times), len(texts) / min(build_times)
    print(
        f"raw SentenceTransformer.encode: {raw_rate:8.1f} texts/s  (runs: {', '.join(f'{t:.1f}s' for t in raw_times)})"
    )
    print(
        f"build_index (encode+FAISS+save): {build_rate:8.1f} entries/s (runs: "
        f"{', '.join(f'{t:.1f}s' for t in build_times)})"
    )
    print(f"build / raw throughput ratio: {build_rate / raw_rate:.3f} (target >= 0.9)")


def latency(args: argparse.Namespace, queries: list[str]) -> None:
    """Print invoke, encoder-only, FAISS-only and store-search latencies on a synthetic index per index type."""
    from elmd_sdk.retrievers import EmotionalRetriever, ERMEncoder, IndexConfig, IndexEntry
    from elmd_sdk.retrievers.encoder import ERMConfig
    from elmd_sdk.retrievers.index_build import build_store

    encoder = ERMEncoder.create(ERMConfig(s=args.ssc)) if args.ssc else ERMEncoder.plain()
    rng = np.random.default_rng(args.seed)
    vectors = rng.standard_normal((args.entries, encoder.dim), dtype=np.float32)  # (n, dim) synthetic
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    entries = [
        IndexEntry(f"synthetic utterance {i}", "neutral", f"synthetic response {i}", "neutral", f"d{i // 10}")
        for i in range(args.entries)
    ]
    kind = f"untrained ERM s={args.ssc}" if args.ssc else "plain MiniLM"
    print(f"latency index: {args.entries} entries, SYNTHETIC random unit vectors, dim {encoder.dim} ({kind} queries)")
    query_vectors = encoder.encode(queries)  # (q, dim)
    encode_times = [timed(lambda q=q: encoder.encode([q])) for q in queries]
    print(f"  query encoding alone            {percentiles_ms(encode_times)}")
    for index_type in [t for t in args.index_types.split(",") if t]:
        started = time.perf_counter()
        store = build_store(vectors, entries, IndexConfig(index_type=index_type), encoder)  # type: ignore[arg-type]
        print(f"[{index_type}] built in {time.perf_counter() - started:.1f} s")
        retriever = EmotionalRetriever(store=store, encoder=encoder, k=1)
        for q in queries[:20]:
            retriever.invoke(q)  # warm-up
        faiss_times = [timed(lambda v=v: store.index.search(v[None, :], 1)) for v in query_vectors]  # noqa: B023
        store_times = [timed(lambda v=v: retriever.search_by_vector(v)) for v in query_vectors]  # noqa: B023
        invoke_times = [timed(lambda q=q: retriever.invoke(q)) for q in queries]  # noqa: B023
        print(f"  FAISS index.search alone        {percentiles_ms(faiss_times)}")
        print(f"  LangChain store search + docs   {percentiles_ms(store_times)}")
        print(f"  retriever.invoke (end to end)   {percentiles_ms(invoke_times)}")
        p50_invoke, p50_faiss = np.percentile(invoke_times, 50) * 1e3, np.percentile(faiss_times, 50) * 1e3
        print(
            f"  targets: invoke p50 {p50_invoke:.2f} ms < 20 -> {'met' if p50_invoke < 20 else 'NOT met'}; "
            f"FAISS p50 {p50_faiss:.3f} ms < 2 -> {'met' if p50_faiss < 2 else 'NOT met'}"
        )


def main() -> None:
    """Run both parts on MELD texts read from --data-root."""
    args = parse_args()
    import faiss
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)

    print(f"data: MELD read from --data-root {args.data_root} (train utterances for throughput, dev for queries)")
    print(f"cpu cores {os.cpu_count()}, torch threads {torch.get_num_threads()}, load average {os.getloadavg()}")
    train = read_meld(args.data_root, "train")[: args.texts]
    dev = read_meld(args.data_root, "dev")[: args.queries]
    if train:
        with tempfile.TemporaryDirectory(prefix="elmd-retrieval-speed-") as tmp:
            throughput(args, [s.utterance.text for s in train], train, Path(tmp))
    if args.entries:
        latency(args, [s.utterance.text for s in dev])
    print(f"load average at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
