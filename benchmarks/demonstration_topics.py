"""How close in topic the embedded default's demonstrations are to MELD dev utterances (issue #21, point 2).

The topic similarity is the cosine of the ERM's sentence embeddings before SSC (``EmotionalRetriever.
topic_similarities``, what ``demonstration_min_topic`` thresholds). Prints, for the default corpus: the similarity of
random pairs of its utterances (the baseline a threshold must clear); for ``--queries`` MELD dev utterances (seed 0),
the best similarity among the 10 and the 50 pairs the ERM retrieves and over the whole corpus, with the share of
utterances reaching 0.3, 0.4 and 0.5; and the retrieved pairs of three example utterances, with their ERM scores::

    .venv/bin/python benchmarks/demonstration_topics.py

Reads ``../shared/data/meld/dev_sent_emo.csv`` under ``--data-root`` (never the test split).
"""

from __future__ import annotations

import random

import numpy as np
from _common import meld_parser, read_meld

EXAMPLES = (
    "My dog ran away this morning.",
    "I got an A on my chemistry exam after failing the last one!",
    "Ugh, my landlord just raised the rent by 40 percent.",
)


def main() -> None:
    p = meld_parser(__doc__)
    p.add_argument("--queries", type=int, default=300, help="MELD dev utterances to query")
    args = p.parse_args()
    import torch

    from elmd_sdk.paths import default_bundle_path
    from elmd_sdk.retrievers import EmotionalRetriever

    torch.set_num_threads(1)
    retriever = EmotionalRetriever.load(default_bundle_path() / "index")
    embed = retriever.encoder.embed_sentences  # type: ignore[attr-defined]  # an ERMEncoder
    corpus = [document.metadata["utterance"] for document in retriever.store.docstore._dict.values()]  # type: ignore[attr-defined]
    vectors = embed(corpus)  # (N, d), unit rows
    rng = np.random.default_rng(0)
    first, second = rng.integers(0, len(corpus), 5000), rng.integers(0, len(corpus), 5000)
    random_pairs = (vectors[first] * vectors[second]).sum(axis=1)[first != second]
    print(f"default corpus: {len(corpus)} utterances; topic similarity of random pairs of them:")
    p50, p90, p95, p99 = np.percentile(random_pairs, [50, 90, 95, 99])
    print(f"  mean {random_pairs.mean():.3f}, p50 {p50:.3f}, p90 {p90:.3f}, p95 {p95:.3f}, p99 {p99:.3f}")

    utterances = [sample.utterance.text for sample in read_meld(args.data_root, "dev")]
    random.Random(0).shuffle(utterances)
    best: dict[str, list[float]] = {"10 retrieved": [], "50 retrieved": [], "whole corpus": []}
    for query in utterances[: args.queries]:
        found = retriever.invoke(query, k=50)
        topics = retriever.topic_similarities(query, [document.metadata["utterance"] for document in found])
        best["10 retrieved"].append(max(topics[:10]))
        best["50 retrieved"].append(max(topics))
        best["whole corpus"].append(float((vectors @ embed([query])[0]).max()))
    print(f"\n{args.queries} MELD dev utterances: the best topic similarity of a pair among")
    for name, values in best.items():
        row = np.array(values)
        p10, p50, p90 = np.percentile(row, [10, 50, 90])
        shares = ", ".join(f">= {t}: {100 * (row >= t).mean():.0f}%" for t in (0.3, 0.4, 0.5))
        print(f"  {name:<13} p10 {p10:.3f}, p50 {p50:.3f}, p90 {p90:.3f};  {shares}")

    for query in EXAMPLES:
        found = retriever.invoke(query, k=10)
        topics = retriever.topic_similarities(query, [document.metadata["utterance"] for document in found])
        print(f"\n{query}\n  the ERM's 10 nearest (topic similarity, ERM score, u'):")
        for document, topic in zip(found, topics, strict=True):
            print(f"  {topic:.3f}  {document.metadata['score']:.3f}  {document.metadata['utterance']}")
        similarity = vectors @ embed([query])[0]
        top = np.argsort(-similarity)[:2]
        print("  closest in topic in the corpus: " + "; ".join(f"{similarity[i]:.3f} {corpus[i]}" for i in top))


if __name__ == "__main__":
    main()
