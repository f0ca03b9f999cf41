"""Decisions on ``elmd-sdk serve``, against chat replies of the same server in the same run.

The embedded default bundle (or ``--bundle``) is served as a subprocess on a free loopback port; the official
``openai`` client asks the emotion decision (``utterance_emotion`` and ``response_emotion`` over the bundle's labels)
about one-utterance conversations (``serve_load.UTTERANCES``, in turn):

1. latency: per conversation, one emotion decision and one chat completion of ``--max-tokens`` tokens (greedy),
   ``--rounds`` times (a round's decisions first, then its replies, so that no request follows one on its own
   conversation, whose prompt the server's prompt cache would still hold): the median seconds of each, the
   completion tokens the replies had, and the decision's time over the reply's (target <= 0.5); the largest
   difference between the decision's ``response_emotion`` probabilities and the reply's ``emotion_scores`` (the same
   computation; at most 1e-5 in float32, 2**-8 where the LLM computes in 16 bits);
2. throughput: one client sending ``--requests`` decisions back to back, then ``--clients`` clients sending
   ``--requests`` each at once: aggregate decisions/s and the ratio to one client (target >= 3).

    .venv/bin/python benchmarks/decisions.py [--bundle DIR] [--clients 8] [--requests 8] [--rounds 2]
        [--max-tokens 48] [--threads N] [--quantize none|int8|int4] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _common import percentile  # also sets HF_HUB_OFFLINE and TOKENIZERS_PARALLELISM
from serve_load import UTTERANCES, announce, free_port, print_rows, settings_of, start_server, stop_server


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the embedded default bundle)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients of the throughput part")
    p.add_argument("--requests", type=int, default=8, help="decisions per client in the throughput part")
    p.add_argument("--rounds", type=int, default=2, help="passes over the conversations in the latency part")
    p.add_argument("--max-tokens", type=int, default=48, help="max_tokens of the chat replies")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads of the server")
    p.add_argument("--quantize", default=None, help="the server's --quantize (default: the bundle's)")
    p.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for /health")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    return p.parse_args()


def emotion_questions(labels: list[str]) -> list[dict[str, Any]]:
    """The two emotion questions over the model's labels."""
    choices = [{"value": label} for label in labels]
    return [
        {"type": "choice", "name": name, "instructions": f"The {name.replace('_', ' ')}.", "choices": choices}
        for name in ("utterance_emotion", "response_emotion")
    ]


def decide(client: Any, model: str, text: str, labels: list[str]) -> tuple[float, dict[str, float]]:
    """One emotion decision: seconds, and the response emotion's probabilities."""
    started = time.perf_counter()
    decision = client.decisions.create(
        model=model, input=[{"role": "user", "content": text}], questions=emotion_questions(labels)
    )
    seconds = time.perf_counter() - started
    response = decision.answers[1]
    return seconds, {str(p.value): p.probability for p in response.probabilities}


def reply(client: Any, model: str, text: str, max_tokens: int) -> tuple[float, int, dict[str, float]]:
    """One greedy chat completion: seconds, completion tokens, the emotion scores."""
    started = time.perf_counter()
    completion = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": text}], temperature=0, max_tokens=max_tokens
    )
    seconds = time.perf_counter() - started
    scores = completion.choices[0].message.model_extra["emotion_scores"]
    return seconds, completion.usage.completion_tokens, scores


def throughput(base_url: str, model: str, labels: list[str], clients: int, requests: int) -> tuple[int, float, int]:
    """``clients`` threads sending ``requests`` decisions each: (answered, wall seconds, failed)."""
    from openai import OpenAI

    answered, failed = [0], [0]
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def loop(k: int) -> None:
        with OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600.0) as client:
            barrier.wait()
            for i in range(requests):
                try:
                    decide(client, model, UTTERANCES[(k + i) % len(UTTERANCES)], labels)
                    outcome = answered
                except Exception:  # every failure counts
                    outcome = failed
                with lock:
                    outcome[0] += 1

    threads = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return answered[0], time.perf_counter() - started, failed[0]


def same_probabilities(args: argparse.Namespace) -> float:
    """How far the decision's and the reply's probabilities may differ: the same computation in another batch shape,
    so float32's last bits (1e-5), or bfloat16's rounding step (2**-8) where the LLM computes in 16 bits."""
    from elmd_sdk.bundle import load_bundle
    from elmd_sdk.paths import default_bundle_path

    manifest, _ = load_bundle(args.bundle or default_bundle_path())
    quantize = args.quantize or manifest.quantize
    return 1e-5 if quantize == "none" and manifest.dtype in ("auto", "float32") else 2**-8


def main() -> None:
    args = parse_args()
    if args.threads:  # before torch is imported; the server inherits it
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    from openai import OpenAI

    command, host = announce()
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="decisions_", suffix=".log", delete=False)  # noqa: SIM115
    serve_args = argparse.Namespace(bundle=args.bundle, clients=args.clients, burst_clients=args.clients,
                                    start_timeout=args.start_timeout)  # fmt: skip
    proc, model = start_server(serve_args, port, log, ["--quantize", args.quantize] if args.quantize else [])
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        client = OpenAI(base_url=base_url, api_key="bench", max_retries=0, timeout=600.0)
        labels = [str(label) for label in client.models.list().data[0].model_extra["emotions"]]
        decide(client, model, UTTERANCES[0], labels)  # warm-up: the calibration prior, the first prompts
        reply(client, model, UTTERANCES[0], args.max_tokens)
        decisions: list[float] = []
        replies: list[float] = []
        tokens: list[int] = []
        gap = 0.0
        for _ in range(args.rounds):  # decisions, then replies: each request follows one on another conversation
            asked = [decide(client, model, text, labels) for text in UTTERANCES]
            answered = [reply(client, model, text, args.max_tokens) for text in UTTERANCES]
            for (seconds, probabilities), (reply_seconds, reply_tokens, scores) in zip(asked, answered, strict=True):
                decisions.append(seconds)
                replies.append(reply_seconds)
                tokens.append(reply_tokens)
                gap = max(gap, *(abs(probabilities[label] - scores[label]) for label in labels))
        print(f"latency: {len(decisions)} decisions and replies", flush=True)
        one = throughput(base_url, model, labels, 1, args.requests)
        print(f"one client: {one[0]} decisions in {one[1]:.2f} s", flush=True)
        many = throughput(base_url, model, labels, args.clients, args.requests)
        print(f"{args.clients} clients: {many[0]} decisions in {many[1]:.2f} s", flush=True)
    finally:
        stop = stop_server(proc, 30.0)
        log.close()
    os.unlink(log.name)

    same = same_probabilities(args)
    decision_s, reply_s = percentile(decisions, 50), percentile(replies, 50)
    latency_ratio = decision_s / reply_s
    one_rate, many_rate = one[0] / one[1], many[0] / many[1]
    rows = [
        ("emotion decision, median (ms)", f"{decision_s * 1e3:.0f}", "", None),
        (f"chat reply of max_tokens={args.max_tokens}, median (ms)", f"{reply_s * 1e3:.0f}", "", None),
        ("chat reply completion tokens, mean", f"{sum(tokens) / len(tokens):.1f}", "", None),
        ("decision / reply time", f"{latency_ratio:.3f}", "<= 0.5", latency_ratio <= 0.5),
        ("decision vs reply probabilities, max |difference|", f"{gap:.1e}", f"<= {same:.0e}", gap <= same),
        ("one client decisions/s", f"{one_rate:.2f}", "", None),
        (f"{args.clients} clients aggregate decisions/s", f"{many_rate:.2f}", "", None),
        (f"{args.clients} clients / one client", f"{many_rate / one_rate:.3f}", ">= 3", many_rate / one_rate >= 3),
        ("failed decisions", str(one[2] + many[2]), "0", one[2] + many[2] == 0),
        ("SIGTERM exit code", str(stop["exit_code"]), "0", stop["exit_code"] == 0),
    ]
    print(f"\ndecisions on elmd-sdk serve, {len(decisions)} latency pairs, {args.requests} decisions per client")
    print_rows(rows, 10, 8)
    print(f"load average at end={os.getloadavg()}")
    if args.json:
        from elmd_sdk.io import atomic_write_bytes

        data = {
            "command": command,
            "machine": host,
            "settings": settings_of(args),
            "decision_seconds": decisions,
            "reply_seconds": replies,
            "reply_tokens": tokens,
            "table": [{"figure": n, "value": v, "target": t, "met": m} for n, v, t, m in rows],
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(args.json, json.dumps(data, indent=2).encode())
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
