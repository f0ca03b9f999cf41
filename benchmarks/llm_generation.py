"""ELMDChatModel against raw transformers ``generate`` on the embedded default LLM (SmolLM2-135M-Instruct, CPU).

Measured in one run, same model object, prompt and settings (greedy, same ``max_new_tokens``):
- time to first token (TTFT) and tokens/s of ``chat.stream`` and ``chat.invoke`` as ratios of raw ``model.generate``
  (chat template + tokenization included on both sides; ratio >= 1 means the wrapper is as fast; target >= 0.9);
- cold start with a warm cache: a fresh interpreter that loads the chat model and streams the first token
  (target < 3 s), next to the same for raw ``load_llm`` + ``generate``;
- peak resident memory of one chat turn in a fresh process (target < 1.5 GB), next to the raw baseline's;
- ``elmd-sdk chat`` in a pseudo-terminal: time from the command's start to its prompt (target < 1.5 s) and to the
  first token of a first turn typed at once, next to the cold raw ``load_llm`` + ``generate`` of the same run.

Run: ``.venv/bin/python benchmarks/llm_generation.py [--max-new-tokens 64] [--repeats 5] [--cold-runs 3]
[--threads N]`` (the chat measurement needs the dev install's ``pexpect``); on a machine shared with other jobs,
``--threads 1`` avoids OpenMP spin-waiting that slows every contender alike by an order of magnitude.
The first run converts the GGUF into the safetensors cache (``ELMD_SDK_HOME``); that time is printed separately.
No data set is read. The machine load average is printed at start and end: numbers on a busy machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SYSTEM = "You are a warm, attentive friend. Answer in one or two sentences, matching the speaker's feelings."
USER = (
    "Dialogue so far:\n"
    "Monica: I can't believe you finally did it!\n"
    "Chandler: Yeah, I signed the papers this morning. No more spreadsheets.\n"
    "Monica: So what are you going to do now?\n"
    "Utterance: Chandler: Honestly? I have no idea, and it is kind of terrifying.\n"
    "Reply as Monica."
)
TURNS = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]

# Child programs: the clock starts before any import, so interpreter start-up is the only part not counted.
COLD_CHAT = """
import time; t0 = time.perf_counter()
from elmd_sdk.models.chat_model import ELMDChatModel
t1 = time.perf_counter()
chat = ELMDChatModel.load(do_sample=False, max_new_tokens=8)
t2 = time.perf_counter()
stream = chat.stream([("system", {system!r}), ("human", {user!r})])
for chunk in stream:
    if chunk.content:
        break
print(time.perf_counter() - t0, t1 - t0, t2 - t1, flush=True)
stream.close()
"""
COLD_RAW = """
import time; t0 = time.perf_counter()
import torch
from transformers.generation.streamers import BaseStreamer
from elmd_sdk.models.llm import load_llm
class First(BaseStreamer):
    calls = 0
    def put(self, value):
        self.calls += 1
        if self.calls == 2:
            print(time.perf_counter() - t0, flush=True)
    def end(self):
        pass
model, tokenizer = load_llm()
ids = tokenizer.apply_chat_template({turns!r}, add_generation_prompt=True, return_tensors="pt")["input_ids"]
model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False, streamer=First())
"""
RSS_CHAT = """
import resource, sys
from elmd_sdk.models.chat_model import ELMDChatModel
chat = ELMDChatModel.load(do_sample=False, max_new_tokens={n})
chat.invoke([("system", {system!r}), ("human", {user!r})])
scale = 1 if sys.platform == "darwin" else 1024
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, flush=True)
"""
RSS_RAW = """
import resource, sys, torch
from elmd_sdk.models.llm import load_llm
model, tokenizer = load_llm()
ids = tokenizer.apply_chat_template({turns!r}, add_generation_prompt=True, return_tensors="pt")["input_ids"]
model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens={n}, do_sample=False)
scale = 1 if sys.platform == "darwin" else 1024
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, flush=True)
"""


def _numbers(program: str) -> list[float]:
    """Run a child interpreter and return the numbers it prints."""
    out = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child failed:\n{out.stderr[-2000:]}")
    return [float(word) for word in out.stdout.split()]


@dataclass(frozen=True)
class Turn:
    """One timed reply: wall-clock TTFT and total, process CPU seconds (all threads), new tokens."""

    ttft: float
    wall: float
    cpu: float
    tokens: int


def _raw_turn(model: Any, tokenizer: Any, n: int) -> Turn:
    """Raw baseline: chat template + tokenization + ``generate``."""
    import torch
    from transformers.generation.streamers import BaseStreamer

    class FirstToken(BaseStreamer):
        """Records when the first generated token arrives (``generate`` puts the prompt first)."""

        def __init__(self) -> None:
            self.calls, self.at = 0, 0.0

        def put(self, value: Any) -> None:
            self.calls += 1
            if self.calls == 2:
                self.at = time.perf_counter()

        def end(self) -> None:
            pass

    first = FirstToken()
    t0, c0 = time.perf_counter(), time.process_time()
    ids = tokenizer.apply_chat_template(TURNS, add_generation_prompt=True, return_tensors="pt")["input_ids"]
    out = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, do_sample=False, streamer=first
    )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return Turn(first.at - t0, wall, cpu, int(out.shape[1] - ids.shape[1]))


def _stream_turn(chat: Any) -> Turn:
    """``chat.stream``; TTFT is the time to the first non-empty chunk."""
    t0, c0 = time.perf_counter(), time.process_time()
    ttft, tokens = 0.0, 0
    for chunk in chat.stream([("system", SYSTEM), ("human", USER)]):
        if chunk.content and not ttft:
            ttft = time.perf_counter() - t0
        if chunk.usage_metadata:  # spread over the chunks, which add up (LangChain's AIMessageChunk addition)
            tokens += chunk.usage_metadata["output_tokens"]
    return Turn(ttft, time.perf_counter() - t0, time.process_time() - c0, tokens)


def _invoke_turn(chat: Any) -> Turn:
    """``chat.invoke``; no first token to time (TTFT is NaN)."""
    t0, c0 = time.perf_counter(), time.process_time()
    reply = chat.invoke([("system", SYSTEM), ("human", USER)])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return Turn(float("nan"), wall, cpu, reply.usage_metadata["output_tokens"])


def _interleaved_runs(turns: dict[str, Callable[[], Turn]], repeats: int) -> dict[str, dict[str, float]]:
    """Run every contender once to warm up, then ``repeats`` interleaved rounds, rotating the order each round.

    Per contender: best (least disturbed by other processes) and median TTFT and tokens/s of wall-clock time, and
    the median tokens per CPU-second, which other processes on the machine barely change.
    """
    for run in turns.values():
        run()
    names = list(turns)
    samples: dict[str, list[Turn]] = {name: [] for name in names}
    for i in range(repeats):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            samples[name].append(turns[name]())
    return {
        name: {
            "best_ttft": min(t.ttft for t in runs),
            "median_ttft": statistics.median(t.ttft for t in runs),
            "best_tps": max(t.tokens / t.wall for t in runs),
            "median_tps": statistics.median(t.tokens / t.wall for t in runs),
            "cpu_tps": statistics.median(t.tokens / t.cpu for t in runs),
            "tokens": statistics.median(t.tokens for t in runs),
        }
        for name, runs in samples.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cold-runs", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads here and in the children (default: torch's own)"
    )
    args = parser.parse_args()
    if args.threads:  # before torch is imported, so children inherit it too
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)
    print(f"cpus={os.cpu_count()} load average at start={os.getloadavg()}")

    import torch

    from elmd_sdk.models.chat_model import ELMDChatModel
    from elmd_sdk.models.llm import load_llm

    t0 = time.perf_counter()
    model, tokenizer = load_llm()
    print(
        f"load_llm() in-process (includes the one-time GGUF conversion if the cache was cold): "
        f"{time.perf_counter() - t0:.2f} s; torch threads={torch.get_num_threads()}"
    )
    chat = ELMDChatModel(hf_model=model, tokenizer=tokenizer, do_sample=False, max_new_tokens=args.max_new_tokens)
    n = args.max_new_tokens

    results = _interleaved_runs(
        {
            "raw generate": lambda: _raw_turn(model, tokenizer, n),
            "chat.stream": lambda: _stream_turn(chat),
            "chat.invoke": lambda: _invoke_turn(chat),
        },
        args.repeats,
    )
    raw = results["raw generate"]
    print(f"\nthroughput, greedy, max_new_tokens={n}, {args.repeats} interleaved rounds (best | median):")
    for name, r in results.items():
        print(
            f"  {name:13s} tokens={r['tokens']:.0f}  tokens/s={r['best_tps']:6.2f} | {r['median_tps']:6.2f}"
            f"  ratio={r['best_tps'] / raw['best_tps']:.3f} | {r['median_tps'] / raw['median_tps']:.3f}"
            f"  tokens/CPU-s={r['cpu_tps']:6.2f} ratio={r['cpu_tps'] / raw['cpu_tps']:.3f}"
        )
        if r["best_ttft"] == r["best_ttft"]:  # invoke has no first token to time (NaN)
            print(
                f"  {'':13s} TTFT={r['best_ttft'] * 1000:6.1f} | {r['median_ttft'] * 1000:6.1f} ms"
                f"  ratio raw/wrapper={raw['best_ttft'] / r['best_ttft']:.3f} | "
                f"{raw['median_ttft'] / r['median_ttft']:.3f}"
            )
    print("  target: every ratio >= 0.9")

    fill = {"system": SYSTEM, "user": USER, "turns": TURNS, "n": n}
    cold_chat = [_numbers(COLD_CHAT.format(**fill)) for _ in range(args.cold_runs)]
    cold_raw = [_numbers(COLD_RAW.format(**fill))[0] for _ in range(args.cold_runs)]
    chat_s, raw_s = statistics.median(run[0] for run in cold_chat), statistics.median(cold_raw)
    print(f"\ncold start to first token, warm cache, fresh interpreter (median of {args.cold_runs}):")
    print(f"  ELMDChatModel.load + stream: {chat_s:.2f} s")
    for total, imports, load in cold_chat:
        first = total - imports - load
        print(f"    run: {total:.2f} s = import {imports:.2f} + load {load:.2f} + first token {first:.2f}")
    print(f"  raw load_llm + generate:     {raw_s:.2f} s  ratio raw/wrapper={raw_s / chat_s:.3f}")
    print("  target: wrapper < 3 s")

    rss_chat, rss_raw = _numbers(RSS_CHAT.format(**fill))[0], _numbers(RSS_RAW.format(**fill))[0]
    print(f"\npeak resident memory of one turn (max_new_tokens={n}), fresh process:")
    print(
        f"  ELMDChatModel: {rss_chat:.0f} MiB   raw load_llm + generate: {rss_raw:.0f} MiB   "
        f"ratio wrapper/raw={rss_chat / rss_raw:.3f}"
    )
    print("  target: wrapper < 1536 MiB")

    starts = [_chat_start() for _ in range(args.cold_runs)]
    prompt_s, first_s = statistics.median(s[0] for s in starts), statistics.median(s[1] for s in starts)
    print(f"\nelmd-sdk chat in a terminal, warm cache, first turn typed at the prompt (median of {args.cold_runs}):")
    print(f"  start to prompt: {prompt_s:.2f} s (target < 1.5 s)   start to first token of the reply: {first_s:.2f} s")
    print(f"  raw load_llm + generate to first token, same run: {raw_s:.2f} s")
    print(f"\nload average at end={os.getloadavg()}")


def _chat_start() -> tuple[float, float]:
    """Seconds from starting ``elmd-sdk chat`` to its prompt, and to the first character of the first reply."""
    import pexpect

    exe = os.path.join(os.path.dirname(sys.executable), "elmd-sdk")
    t0 = time.perf_counter()
    child = pexpect.spawn(exe, ["chat", "--max-new-tokens", "8"], encoding="utf-8", timeout=600)
    child.expect_exact("you> ")
    prompt = time.perf_counter() - t0
    child.sendline(USER)
    child.expect(r"bot \(\w+ [01]\.\d\d\): \S")
    first = time.perf_counter() - t0
    child.expect_exact("you> ")
    child.sendline("/exit")
    child.expect(pexpect.EOF)
    return prompt, first


if __name__ == "__main__":
    main()
